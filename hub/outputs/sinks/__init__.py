"""One module per output type; :func:`make_sink` picks it (importing only what is used)."""

from __future__ import annotations

import importlib
from typing import Any

from ..config import OutputConfig
from .base import SendResult, Sink

MODULES = {
    "elasticsearch": "elasticsearch_sink:ElasticsearchSink",
    "kafka": "kafka_sink:KafkaSink",
    "logstash": "logstash_sink:LogstashSink",
    "redis": "redis_sink:RedisSink",
    "file": "file_sink:FileSink",
    "stdout": "stdout_sink:StdoutSink",
    "webhook": "webhook_sink:WebhookSink",
    "syslog": "syslog_sink:SyslogSink",
}


def make_sink(cfg: OutputConfig, **extra: Any) -> Sink:
    module, _, cls = MODULES[cfg.type].partition(":")
    mod = importlib.import_module(f"{__name__}.{module}")
    return getattr(mod, cls)(cfg, cfg.typed_options(), **extra)


__all__ = ["Sink", "SendResult", "make_sink"]
