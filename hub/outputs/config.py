"""One output's configuration: the common keys and, per type, the keys under ``options``.

``options`` stays a plain mapping in :class:`OutputConfig` (so the hub's YAML keeps one shape
for every type), but :meth:`OutputConfig.validate` checks it strictly against the type's
options dataclass below, so a typo is reported as ``hub.yaml:12: outputs[0].options.hots:
unknown key`` instead of silently using a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from threatseer.common.configfile import ConfigError, from_dict

TYPES = ("elasticsearch", "kafka", "logstash", "redis", "file", "stdout")
OVERFLOW_POLICIES = ("block", "drop-oldest", "spill")


DATASET_OR_NAMESPACE_BAD = set(' "*\\<|,>/?#:-')


@dataclass
class ElasticsearchOptions:
    # Nodes to send to (the client round-robins and fails over between them).
    hosts: list[str] = field(default_factory=lambda: ["http://127.0.0.1:9200"])
    # data_stream (Elastic's naming, logs-<dataset>-<namespace>, which Discover and the
    # Security app's logs-* index patterns find) or daily (<index>-YYYY.MM.DD).
    index_mode: str = "data_stream"
    # Data stream dataset and namespace (e.g. one namespace per environment: prod, staging).
    dataset: str = "threatseer.events"
    namespace: str = "default"
    # An explicit data stream name or (daily) index prefix; empty: logs-<dataset>-<namespace>,
    # or threatseer-events for daily indices.
    index: str = ""
    # Install the index template with ECS mappings when the output connects.
    setup_template: bool = True
    # ILM policy the template names (index.lifecycle.name); `threatseer es-setup` installs it.
    # Empty: none.
    ilm_policy: str = "threatseer-events"
    # Ingest pipeline every document goes through (bulk ?pipeline=); empty: none.
    pipeline: str = ""
    # gzip request bodies (as Beats' compression_level does): a fraction of the bytes on the
    # wire for some CPU.
    compression: bool = True
    # Credentials: username + password, or api_key. Each secret may also come from a file
    # (password_file, api_key_file) or the environment (${ES_PASSWORD}), never printed.
    username: str = ""
    password: str = ""
    api_key: str = ""
    # CA bundle for https hosts; empty uses the system store.
    ca_certs: str = ""
    verify_certs: bool = True
    # Client certificate and key (PEM) for clusters that require TLS client authentication.
    client_cert: str = ""
    client_key: str = ""
    request_timeout_s: float = 10.0
    # Where documents Elasticsearch refuses (4xx other than 409/429) are written as JSON lines;
    # empty: <spill_dir>/<name>.dead-letter.jsonl.
    dead_letter_path: str = ""

    @property
    def target(self) -> str:
        """The data stream, or the daily indices' prefix, documents go to."""
        if self.index:
            return self.index
        if self.index_mode == "data_stream":
            return f"logs-{self.dataset}-{self.namespace}"
        return "threatseer-events"

    def validate(self) -> None:
        if not self.hosts:
            raise ValueError("hosts: at least one host is needed")
        if self.index_mode not in ("data_stream", "daily"):
            raise ValueError("index_mode: must be data_stream or daily")
        for key in ("dataset", "namespace"):
            value = getattr(self, key)
            if (not value or value != value.lower() or len(value) > 100
                    or DATASET_OR_NAMESPACE_BAD & set(value)):
                raise ValueError(f"{key}: lower case, at most 100 characters, without '-' "
                                 "or any of \\/*?\"<>|,#: and spaces")
        if self.index and (self.index != self.index.lower()
                           or any(c in self.index for c in ' "*\\<|,>/?')):
            raise ValueError("index: must be a lower-case Elasticsearch index name")
        if self.client_key and not self.client_cert:
            raise ValueError("client_cert: needed with client_key")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s: must be positive")


@dataclass
class KafkaOptions:
    # librdkafka bootstrap.servers.
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "threatseer-events"
    # none, gzip, snappy, lz4 or zstd.
    compression: str = "lz4"
    # Idempotent producer: the broker drops the duplicates librdkafka's own retries would make.
    idempotence: bool = True
    # How long librdkafka keeps trying one message before reporting it failed
    # (message.timeout.ms); the output then retries the batch with backoff.
    delivery_timeout_s: float = 30.0
    # Extra librdkafka settings (SASL, TLS, linger.ms, ...); they override the above.
    config: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("bootstrap_servers: must not be empty")
        if not self.topic:
            raise ValueError("topic: must not be empty")
        if self.compression not in ("none", "gzip", "snappy", "lz4", "zstd"):
            raise ValueError("compression: must be none, gzip, snappy, lz4 or zstd")
        if self.delivery_timeout_s <= 0:
            raise ValueError("delivery_timeout_s: must be positive")


@dataclass
class LogstashOptions:
    host: str = "127.0.0.1"
    port: int = 5000
    tls: bool = False
    # CA bundle to verify the server; empty uses the system store.
    ca_certs: str = ""
    verify_certs: bool = True
    # Client certificate and key (mutual TLS), optional.
    certfile: str = ""
    keyfile: str = ""
    timeout_s: float = 10.0

    def validate(self) -> None:
        if not self.host:
            raise ValueError("host: must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError("port: must be 1-65535")
        if self.keyfile and not self.certfile:
            raise ValueError("certfile: needed with keyfile")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s: must be positive")


@dataclass
class RedisOptions:
    url: str = "redis://127.0.0.1:6379/0"
    # AUTH password (or password_file, or ${ENV} in it or in the url); empty: the url's.
    password: str = ""
    # list (RPUSH, like Beats), stream (XADD) or pubsub (PUBLISH).
    mode: str = "list"
    # List key, stream key or channel.
    key: str = "threatseer-events"
    # Streams are trimmed to about this many entries (XADD MAXLEN ~).
    maxlen: int = 1_000_000
    timeout_s: float = 5.0

    def validate(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url: must start with redis://, rediss:// or unix://")
        if self.mode not in ("list", "stream", "pubsub"):
            raise ValueError("mode: must be list, stream or pubsub")
        if not self.key:
            raise ValueError("key: must not be empty")
        if self.maxlen < 1:
            raise ValueError("maxlen: must be at least 1")


@dataclass
class FileOptions:
    path: str = ""
    # Rotate when the file would grow past this size.
    max_bytes: int = 100 * 1024 * 1024
    # Rotated files kept (path.1 ... path.N); older ones are deleted.
    keep: int = 7

    def validate(self) -> None:
        if not self.path:
            raise ValueError("path: required for a file output")
        if self.max_bytes < 1024:
            raise ValueError("max_bytes: must be at least 1024")
        if self.keep < 0:
            raise ValueError("keep: must not be negative")


@dataclass
class StdoutOptions:
    # json (one nested ECS document per line) or text (one readable line per event).
    format: str = "json"

    def validate(self) -> None:
        if self.format not in ("json", "text"):
            raise ValueError("format: must be json or text")


OPTIONS: dict[str, type] = {
    "elasticsearch": ElasticsearchOptions,
    "kafka": KafkaOptions,
    "logstash": LogstashOptions,
    "redis": RedisOptions,
    "file": FileOptions,
    "stdout": StdoutOptions,
}


@dataclass
class OutputConfig:
    # elasticsearch, kafka, logstash, redis, file, stdout
    type: str = "stdout"
    # Name in metrics and status; defaults to the type.
    name: str = ""
    # Only events with event.risk_score >= min_score are sent.
    min_score: int = 0
    # Only these event.kind values (empty: all), e.g. ["alert"].
    kinds: list[str] = field(default_factory=list)
    # Only events with one of these event.category values (empty: all), e.g. ["process"].
    categories: list[str] = field(default_factory=list)
    # Bounded queue between the pipeline and this output's worker.
    queue_size: int = 10000
    # On a full queue: block, drop-oldest (counted) or spill (to disk).
    overflow: str = "drop-oldest"
    # Events sent per request (bulk size, Kafka flush, RPUSH arguments).
    batch_size: int = 500
    # How long the worker waits for more events before flushing what it has.
    flush_interval_s: float = 1.0
    # Retry delays double from 0.1 s up to this.
    retry_max_s: float = 30.0
    # Spill files (overflow: spill) and dead-letter files live here.
    spill_dir: str = "/var/lib/threatseer/hub/outputs"
    # Bound of one output's spill file; beyond it new events are dropped (counted).
    spill_max_mb: int = 1024
    # Type-specific settings (hosts, topic, path, ...): see the *Options classes.
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name in status, metrics and file names."""
        return self.name or self.type

    def typed_options(self) -> Any:
        """``options`` as the type's dataclass (raises ValueError naming the bad key)."""
        try:
            return from_dict(self.options, OPTIONS[self.type])
        except ConfigError as exc:
            raise ValueError(f"options.{exc.key}: {exc.message}" if exc.key
                             else f"options: {exc.message}") from None

    def validate(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"type: unknown output type {self.type!r} (known: {', '.join(TYPES)})")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError("overflow: must be block, drop-oldest or spill")
        if self.queue_size < 1:
            raise ValueError("queue_size: must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size: must be at least 1")
        if self.flush_interval_s <= 0:
            raise ValueError("flush_interval_s: must be positive")
        if self.retry_max_s < 0.1:
            raise ValueError("retry_max_s: must be at least 0.1")
        if self.spill_max_mb < 1:
            raise ValueError("spill_max_mb: must be at least 1")
        if self.name and not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError("name: only letters, digits, '-', '_' and '.'")
        kinds = {"event", "alert", "metric", "state", "signal", "pipeline_error", "enrichment"}
        for i, kind in enumerate(self.kinds):
            if kind not in kinds:
                raise ValueError(f"kinds[{i}]: unknown event.kind {kind!r}")
        self.typed_options()


def check_unique_names(configs: list[OutputConfig]) -> None:
    """Two outputs with one name would share metrics and spill files: refuse that."""
    seen: dict[str, int] = {}
    for i, cfg in enumerate(configs):
        if cfg.label in seen:
            raise ValueError(
                f"outputs[{i}].name: {cfg.label!r} is already used by outputs[{seen[cfg.label]}]"
                " (give each output of one type its own name)"
            )
        seen[cfg.label] = i
