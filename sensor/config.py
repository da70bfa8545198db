"""The sensor's configuration: every key, its default, and what it is for.

``threatseer sensor -c sensor.yaml`` reads a YAML file of these keys; anything left out keeps
the default below. ``threatseer sensor --print-config`` shows the effective values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from threatseer.common import wire
from threatseer.common.protect import check_protected_list

DEFAULT_SENSITIVE_PATHS = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d/",
    "/etc/passwd",
    "/etc/group",
    "/etc/ssh/",
    "/etc/pam.d/",
    "/etc/ld.so.preload",
    "/etc/crontab",
    "/etc/cron.d/",
    "/var/spool/cron/",
    "/etc/systemd/system/",
    "/root/.ssh/",
    "/root/.bash_history",
    "/root/.zsh_history",
    "/home/*/.ssh/",
    "/home/*/.bash_history",
    "/home/*/.zsh_history",
    # credential stores of cloud, cluster, registry, git and mail clients, GnuPG, browsers
    "/root/.aws/",
    "/home/*/.aws/",
    "/root/.kube/",
    "/home/*/.kube/",
    "/root/.docker/config.json",
    "/home/*/.docker/config.json",
    "/root/.git-credentials",
    "/home/*/.git-credentials",
    "/root/.netrc",
    "/home/*/.netrc",
    "/root/.gnupg/",
    "/home/*/.gnupg/",
    "/root/.mozilla/",
    "/home/*/.mozilla/",
    "/root/.config/google-chrome/",
    "/home/*/.config/google-chrome/",
    "/root/.config/chromium/",
    "/home/*/.config/chromium/",
    "/etc/kubernetes/",
    "/run/secrets/",
    "/etc/security/pwquality",
    "/etc/security/opasswd",
    "/proc/kcore",
    "/dev/mem",
]

# Where file changes (create, write-open, unlink, rename, link, chmod, chown, ...) are
# reported. chmod adding setuid/setgid bits is reported everywhere regardless.
DEFAULT_WATCHED_PATHS = [
    "/etc/",
    "/root/",
    "/home/*/.ssh/",
    "/home/*/.bashrc",
    "/home/*/.bash_profile",
    "/home/*/.bash_login",
    "/home/*/.bash_logout",
    "/home/*/.bash_history",
    "/home/*/.profile",
    "/home/*/.zshrc",
    "/home/*/.zprofile",
    "/home/*/.zshenv",
    "/home/*/.config/autostart/",
    "/home/*/.config/systemd/",
    "/home/*/.local/lib/",
    "/var/spool/cron/",
    "/var/www/",
    "/lib/systemd/system/",
    "/usr/lib/systemd/system/",
    "/usr/lib/systemd/user/",
    "/usr/lib/udev/rules.d/",
    # Python's startup hooks (.pth, sitecustomize, usercustomize) live in site directories
    "/usr/lib/*/dist-packages/",
    "/usr/lib/*/site-packages/",
    "/usr/local/lib/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "/usr/local/sbin/",
    "/var/log/",
    "/boot/",
    "/lib/modules/",
    "/usr/lib/modules/",
]


@dataclass
class SensorConfig:
    # Where batches go: the hub's ingest (ZeroMQ ROUTER) endpoint.
    hub: str = "tcp://127.0.0.1:5555"
    # More ingest endpoints (the gateways of a hub cluster, docs/cluster.md), tried in turn
    # after `hub`: without ack progress for resend_after_s the sensor moves to the next one
    # and resends everything unacknowledged there (the cluster drops what it already has).
    failover: list[str] = field(default_factory=list)
    # Stable sensor id; empty means derive it from /etc/machine-id.
    sensor_id: str = ""
    # Path prefixes whose opens are reported; '*' matches one path component.
    # Filtered in the kernel; edits apply without reloading the BPF programs.
    sensitive_paths: list[str] = field(default_factory=lambda: list(DEFAULT_SENSITIVE_PATHS))
    # Path prefixes under which file changes are reported ('*' matches one component);
    # truncating a file under /var/log/ is "log-truncate". Filtered in the kernel; edits
    # apply without reloading.
    watched_paths: list[str] = field(default_factory=lambda: list(DEFAULT_WATCHED_PATHS))
    # Events per batch at most. A batch has a fixed cost (a spool write, a send, its share
    # of an ack) that a flood pays per batch; each held event also holds ~1 KiB of memory
    # until the batch goes (768: bench/sensor_bench.py's floods at ~0.85 CPU-us per event
    # within 40 MiB of RSS; 512 took ~1.1).
    batch_size: int = 768
    # The longest an event waits in the sensor. On a quiet host events go out ~2 ms after
    # the kernel saw them; from 800 to 1,250 events/s batches are held up to this long
    # (each costs ~0.3 ms of CPU whatever its size: at 100 ms the sensor takes ~0.8-0.9% of
    # a core at 1,000 events/s), less on either side, at 10,000/s every 7 ms
    # (sensor/pacing.py).
    batch_latency_ms: int = 100
    # The kernel wakes the sensor once this many KiB of records are pending (~1,000 open
    # events), whatever the pacing says.
    batch_wakeup_kib: int = 256
    # Seconds between sensor-health events (lost/filtered counters).
    health_interval_s: float = 30.0
    # BPF ring buffer size in KiB (a power of two, at least 4 KiB). Its pages count twice in
    # the RSS (the data area is mapped twice), so bigger is not free.
    ring_buffer_kib: int = 4096
    # Executables larger than this are not hashed (process.hash.sha256 left out). Hashing is
    # CPython's built-in SHA-256 (~240 MB/s, no OpenSSL in the sensor: 3.5 MiB less RSS), on
    # first sight of each file version; files over 1 MiB on a thread of their own (their
    # exec event, and what follows it, waits for the digest at most 2 s or 4,096 events).
    hash_max_bytes: int = 64 * 1024 * 1024
    # Where the sensor keeps state (spool, keys).
    state_dir: str = "/var/lib/threatseer/sensor"
    # ZeroMQ high-water mark (batches) on the DEALER socket to the hub.
    send_hwm: int = 1000
    # Transport (docs/transport.md). CURVE is required unless plaintext is true: this
    # sensor's secret key file (`threatseer keys gen --type curve`; its public key must be in
    # the hub's curve_allow_list) ...
    curve_secret_key_file: str = ""
    # ... its public key file (optional: derived from the secret; checked when given) ...
    curve_public_key_file: str = ""
    # ... and the hub's public key (40 Z85 characters, or a file holding them).
    curve_server_key: str = ""
    # Send batches unencrypted and unauthenticated (a warning is logged at start). For a
    # hub on the same host or a lab only.
    plaintext: bool = False
    # Unacknowledged batches wait in <state_dir>/spool.db, at most this many MiB of event
    # data; beyond it the oldest are dropped and counted as lost (health events).
    spool_max_mib: int = 256
    # When the disk refuses the spool's writes (full), batches wait in memory instead, at
    # most this many MiB (beyond it the oldest are dropped and counted as lost).
    spool_memory_mib: int = 16
    # Batches sent and not yet acknowledged by the hub, at most. Keep it above 16: a hub
    # answers at once from 16 outstanding, and otherwise after its ingest.ack_delay_ms.
    ack_window: int = 64
    # Without ack progress for this long, resend everything unacknowledged.
    resend_after_s: float = 5.0
    # Carry out the hub's responses: kill commands (rules with action: kill that the hub's
    # response.kill_rules allow) and the exec denylist, killed in the kernel before the
    # program's first instruction. false refuses them all on this host (each refusal is
    # reported); turning it on again takes a restart.
    allow_kill: bool = True
    # Hand the hub's exec denylist (enforce.yaml) to this host's kernel, which kills a denied
    # exec before its first instruction. false (or a kernel that refuses the program): the
    # hub kills denied execs when their events reach it, after the program has started.
    enforce_in_kernel: bool = True
    # Process names or executable paths never killed on this host, besides the built-in
    # list (init, systemd, sshd, salt-minion, threatseer, container runtimes, ...).
    protected_processes: list[str] = field(default_factory=list)
    # Kill commands carried out per minute at most (the kernel's exec enforcement follows
    # the hub's response.max_kills_per_minute).
    max_kills_per_minute: int = 30
    # host:port of a Prometheus /metrics endpoint (e.g. 127.0.0.1:9109); empty: off. The
    # counters are those of the health events, refreshed once a second.
    metrics_listen: str = ""
    # debug, info, warning, error.
    log_level: str = "info"

    def validate(self) -> None:
        if self.sensor_id and not wire.SENSOR_ID.match(self.sensor_id):
            raise ValueError("sensor_id: letters, digits and ._@+- only (no ':' or '/'), "
                             "starting with a letter or digit, at most 128 characters")
        if self.batch_size < 1:
            raise ValueError("batch_size: must be at least 1")
        if self.batch_latency_ms < 1:
            raise ValueError("batch_latency_ms: must be at least 1")
        if self.batch_wakeup_kib < 1:
            raise ValueError("batch_wakeup_kib: must be at least 1 (at most half the ring "
                             "is used)")
        if self.health_interval_s <= 0:
            raise ValueError("health_interval_s: must be positive")
        kib = self.ring_buffer_kib
        if kib < 4 or kib & (kib - 1):
            raise ValueError("ring_buffer_kib: must be a power of two, at least 4")
        for key in ("sensitive_paths", "watched_paths"):
            for i, path in enumerate(getattr(self, key)):
                if not path.startswith("/"):
                    raise ValueError(f"{key}[{i}]: must be an absolute path prefix")
                if len(path) > 200:
                    raise ValueError(f"{key}[{i}]: longer than 200 bytes")
        if self.spool_max_mib < 1:
            raise ValueError("spool_max_mib: must be at least 1")
        if self.spool_memory_mib < 1:
            raise ValueError("spool_memory_mib: must be at least 1")
        if self.ack_window < 1:
            raise ValueError("ack_window: must be at least 1")
        for i, endpoint in enumerate(self.failover):
            if "://" not in endpoint:
                raise ValueError(f"failover[{i}]: must be a ZeroMQ endpoint like "
                                 "tcp://gateway2:5555")
        if self.resend_after_s <= 0:
            raise ValueError("resend_after_s: must be positive")
        check_protected_list(self.protected_processes, "protected_processes")
        if self.max_kills_per_minute < 0:
            raise ValueError("max_kills_per_minute: must not be negative")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level: must be debug, info, warning or error")
        if self.metrics_listen:
            host, sep, port = self.metrics_listen.rpartition(":")
            if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError("metrics_listen: must be host:port, e.g. 127.0.0.1:9109")
