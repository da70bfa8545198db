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

TYPES = ("elasticsearch", "kafka", "logstash", "redis", "file", "stdout", "webhook", "syslog")
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


WEBHOOK_FORMATS = ("generic", "slack", "mattermost", "teams", "custom")


@dataclass
class WebhookOptions:
    # Settings printed redacted (configfile.redacted_field); url may also be url_file.
    SECRET_FIELDS = ("url", "headers")

    # The receiver: http:// or https:// URL (a Slack or Mattermost incoming webhook, a Teams
    # workflow's URL, or any service that takes JSON). It often holds a secret token: it is
    # never logged (errors name the scheme, host and port only) nor printed, and may be given
    # as url_file or ${ENV}.
    url: str = ""
    # The body: generic (the nested ECS event), slack, mattermost, teams (their message
    # formats), or custom (the `template` below).
    format: str = "generic"
    # With format custom: the JSON body, any structure; strings take {field.name} and
    # {@summary} {@title} {@rules} {@outputs} {@score} {@color} {@event} (docs/outputs.md).
    template: Any = None
    # One request per event (false), or one JSON array of bodies per batch (true; for
    # receivers that take batches).
    batch: bool = False
    # Extra request headers, e.g. {Authorization: "Bearer ${WEBHOOK_TOKEN}"}; their values
    # are never printed, and Authorization may be given as Authorization_file.
    headers: dict[str, str] = field(default_factory=dict)
    # POST or PUT.
    method: str = "POST"
    timeout_s: float = 10.0
    # CA bundle for https; empty uses the system store.
    ca_certs: str = ""
    verify_certs: bool = True
    # Client certificate and key (mutual TLS), optional.
    certfile: str = ""
    keyfile: str = ""

    def validate(self) -> None:
        from urllib.parse import urlsplit

        from .template import PRESETS, BodyTemplate, TemplateError

        url = urlsplit(self.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("url: must be an http:// or https:// URL")
        if self.format not in WEBHOOK_FORMATS:
            raise ValueError(f"format: must be one of {', '.join(WEBHOOK_FORMATS)}")
        if (self.format == "custom") != (self.template is not None):
            raise ValueError("template: give one with format custom (and only then)")
        try:
            BodyTemplate(self.template if self.format == "custom" else PRESETS[self.format])
        except TemplateError as exc:
            raise ValueError(f"template: {exc}") from None
        if self.method not in ("POST", "PUT"):
            raise ValueError("method: must be POST or PUT")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s: must be positive")
        if self.keyfile and not self.certfile:
            raise ValueError("certfile: needed with keyfile")


# RFC 5424 facility names and codes; severities by name.
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13,
    "console": 14, "solaris-cron": 15, **{f"local{i}": 16 + i for i in range(8)},
}
SYSLOG_SEVERITIES = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
                     "info": 6, "debug": 7}


@dataclass
class SyslogOptions:
    host: str = "127.0.0.1"
    # 0: 514 for udp and tcp, 6514 for tls.
    port: int = 0
    # udp (RFC 5426: at most once), tcp (RFC 6587) or tls (RFC 5425).
    protocol: str = "udp"
    # tcp/tls framing: octet-counting (RFC 5425, "LEN MSG") or non-transparent (each message
    # ends with a line feed; its own line feeds become spaces).
    framing: str = "octet-counting"
    # Facility name (local0 ... local7, daemon, auth, security, ...).
    facility: str = "local0"
    # Severity of alerts and of the other events (emerg ... debug).
    alert_severity: str = "warning"
    event_severity: str = "notice"
    # APP-NAME of every message.
    app_name: str = "threatseer"
    # HOSTNAME: event (the host the event happened on, host.name) or hub (this hub's name).
    hostname: str = "event"
    # MSG: json (the nested ECS document) or text (one readable line).
    format: str = "json"
    # SD-ID of a structured-data element with score, kind, action, id and rules; it must be
    # NAME@<your IANA private enterprise number>. Empty: no structured data.
    sd_id: str = ""
    # Messages longer than this are cut (UDP datagrams should stay under the path MTU; many
    # receivers take 8 KiB).
    max_message_bytes: int = 8192
    timeout_s: float = 10.0
    # tls: CA bundle (empty: the system store), verification, client certificate and key.
    ca_certs: str = ""
    verify_certs: bool = True
    certfile: str = ""
    keyfile: str = ""

    def validate(self) -> None:
        if not self.host:
            raise ValueError("host: must not be empty")
        if not 0 <= self.port < 65536:
            raise ValueError("port: must be 1-65535 (or 0 for the protocol's default)")
        if self.protocol not in ("udp", "tcp", "tls"):
            raise ValueError("protocol: must be udp, tcp or tls")
        if self.framing not in ("octet-counting", "non-transparent"):
            raise ValueError("framing: must be octet-counting or non-transparent")
        if self.facility not in SYSLOG_FACILITIES:
            raise ValueError(f"facility: unknown (known: {', '.join(SYSLOG_FACILITIES)})")
        for key in ("alert_severity", "event_severity"):
            if getattr(self, key) not in SYSLOG_SEVERITIES:
                raise ValueError(f"{key}: must be one of {', '.join(SYSLOG_SEVERITIES)}")
        if self.hostname not in ("event", "hub"):
            raise ValueError("hostname: must be event or hub")
        if self.format not in ("json", "text"):
            raise ValueError("format: must be json or text")
        if not _printable(self.app_name, 48):
            raise ValueError("app_name: 1-48 printable ASCII characters, no spaces")
        if self.sd_id and ("@" not in self.sd_id or not _printable(self.sd_id, 32)
                           or any(c in self.sd_id for c in '="]')):
            raise ValueError("sd_id: NAME@NUMBER (your IANA private enterprise number), at "
                             "most 32 characters")
        if self.max_message_bytes < 480:
            raise ValueError("max_message_bytes: must be at least 480 (RFC 5424)")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s: must be positive")
        if self.keyfile and not self.certfile:
            raise ValueError("certfile: needed with keyfile")

    @property
    def effective_port(self) -> int:
        return self.port or (6514 if self.protocol == "tls" else 514)


def _printable(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and all(33 <= ord(c) <= 126 for c in text)


OPTIONS: dict[str, type] = {
    "elasticsearch": ElasticsearchOptions,
    "kafka": KafkaOptions,
    "logstash": LogstashOptions,
    "redis": RedisOptions,
    "file": FileOptions,
    "stdout": StdoutOptions,
    "webhook": WebhookOptions,
    "syslog": SyslogOptions,
}


@dataclass
class OutputConfig:
    # elasticsearch, kafka, logstash, redis, file, stdout, webhook, syslog
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
