"""The sensor's Prometheus endpoint (``metrics_listen``; off by default): its counters in the
text exposition format (version 0.0.4), served by a small HTTP responder of its own.

Why not prometheus-client, as the hub does: imported, it adds ~7.6 MiB to the sensor's RSS
(whose budget is 40 MiB) and a package to every sensor host, for a dozen numbers the sensor
already keeps; the standard library's http.server adds ~5.8 MiB (it pulls in email, html and
mimetypes). What is written here is the format's small core: HELP and TYPE lines, escaped
label values, one GET path. The sensor loop hands over a snapshot of its counters (at most
once a second); a scrape reads only that snapshot and /proc/self, never the BPF maps, so the
HTTP thread and the reader never touch the probe at the same time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger("threatseer.sensor")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 8192
CLIENT_TIMEOUT_S = 2.0

# counters() key -> (metric, type, help, labels). One metric per quantity; the kernel's
# filters are one quantity (records dropped in the kernel on purpose) by filter.
KNOWN: dict[str, tuple[str, str, str, tuple[tuple[str, str], ...]]] = {
    "kernel_events": ("threatseer_sensor_kernel_records_total", "counter",
                      "Records the BPF programs wrote to the ring buffer.", ()),
    "kernel_lost": ("threatseer_sensor_kernel_records_lost_total", "counter",
                    "Records lost in the kernel because the ring buffer was full.", ()),
    "kernel_filtered": ("threatseer_sensor_kernel_records_filtered_total", "counter",
                        "Records the kernel filtered out, by filter.", (("filter", "path"),)),
    "kernel_self_filtered": ("threatseer_sensor_kernel_records_filtered_total", "counter", "",
                             (("filter", "self"),)),
    "kernel_change_filtered": ("threatseer_sensor_kernel_records_filtered_total", "counter",
                               "", (("filter", "change"),)),
    "kernel_priv_filtered": ("threatseer_sensor_kernel_records_filtered_total", "counter", "",
                             (("filter", "privilege"),)),
    "kernel_path_truncated": ("threatseer_sensor_paths_truncated_total", "counter",
                              "Paths longer than the kernel-side buffer.", ()),
    "kernel_decode_errors": ("threatseer_sensor_decode_errors_total", "counter",
                             "Ring buffer records that could not be decoded.", ()),
    "events_in": ("threatseer_sensor_events_read_total", "counter",
                  "Events read from the kernel.", ()),
    "events_sent": ("threatseer_sensor_events_acknowledged_total", "counter",
                    "Events the hub acknowledged (or written to stdout).", ()),
    "send_dropped": ("threatseer_sensor_events_dropped_total", "counter",
                     "Events dropped because the hub was unreachable and the spool full.", ()),
    "send_pending": ("threatseer_sensor_spool_batches", "gauge",
                     "Batches sent and not yet acknowledged (in the spool).", ()),
    "processes": ("threatseer_sensor_processes", "gauge",
                  "Processes in the sensor's process table.", ()),
    "not_container_cgroups": ("threatseer_sensor_non_container_cgroups", "gauge",
                              "cgroups seen that are not containers (cached).", ()),
    "hash_waits": ("threatseer_sensor_hash_waits_total", "counter",
                   "Exec events that waited for their executable's SHA-256 (worker thread).",
                   ()),
    "hash_late": ("threatseer_sensor_hash_late_total", "counter",
                  "Exec events sent without their SHA-256: it was not ready in time.", ()),
    "encoded_events": ("threatseer_sensor_events_encoded_total", "counter",
                       "Events the reader encoded itself (no Python per event).", ()),
    "kills": ("threatseer_sensor_kills_total", "counter",
              "Processes killed on the hub's command.", ()),
}

Sample = tuple[str, str, str, tuple[tuple[str, str], ...], float]  # name, type, help, labels, v


def samples(counters: dict[str, int]) -> list[Sample]:
    """The sensor's counters as metric samples; a counter this table does not know yet is
    exported as threatseer_sensor_<name> (a gauge: its kind is not known)."""
    out = []
    for key, value in sorted(counters.items()):
        known = KNOWN.get(key)
        if known is None:
            name = "threatseer_sensor_" + "".join(c if c.isalnum() else "_" for c in key)
            known = (name, "gauge", f"The sensor's {key} counter.", ())
        out.append((*known, float(value)))
    return out


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def exposition(items: Iterable[Sample]) -> str:
    """Samples in the text format: each family's HELP and TYPE once, then its samples."""
    families: dict[str, list[Sample]] = {}
    for item in items:
        families.setdefault(item[0], []).append(item)
    lines = []
    for name, group in families.items():
        text = next((g[2] for g in group if g[2]), "")
        lines.append(f"# HELP {name} {_escape_help(text)}")
        lines.append(f"# TYPE {name} {group[0][1]}")
        for _, _, _, labels, value in group:
            inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(f"{name}{{{inner}}} {_number(value)}" if inner else
                         f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def process_samples() -> list[Sample]:
    """The standard process_* metrics of this process, from /proc/self."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        return []
    utime, stime, start, rss = (int(fields[i]) for i in (11, 12, 19, 21))
    return [
        ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in "
         "seconds.", (), (utime + stime) / _CLOCK_TICKS),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", (),
         float(rss * _PAGE)),
        ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch "
         "in seconds.", (), boot + start / _CLOCK_TICKS),
    ]


class MetricsServer(threading.Thread):
    """Serves ``GET /metrics`` on ``listen`` (host:port) from :meth:`update`'s snapshot."""

    def __init__(self, listen: str, info: dict[str, str]) -> None:
        super().__init__(name="sensor-metrics", daemon=True)
        host, _, port = listen.rpartition(":")
        self.sock = socket.create_server((host.strip("[]") or "0.0.0.0", int(port)),
                                         reuse_port=False)
        self.sock.settimeout(0.5)
        self.address = self.sock.getsockname()[:2]
        self._info = info
        self._snapshot: list[Sample] = []
        self._stopping = threading.Event()
        self.scrapes = 0

    def update(self, counters: dict[str, int]) -> None:
        """A new snapshot of the sensor's counters (called from the sensor's loop)."""
        self._snapshot = samples(counters)  # one reference store: readers see old or new

    def render(self) -> str:
        info = ("threatseer_sensor_info", "gauge", "This sensor: its id and version.",
                tuple(sorted(self._info.items())), 1.0)
        scrapes = ("threatseer_sensor_metrics_scrapes_total", "counter",
                   "Scrapes of this endpoint.", (), float(self.scrapes))
        return exposition([info, *self._snapshot, scrapes, *process_samples()])

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._serve(conn)
                except OSError as exc:  # a client that went away: its problem
                    log.debug("metrics client: %s", exc)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT_S)
        request = b""
        while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
        line = request.split(b"\r\n", 1)[0].split()
        if len(line) != 3 or not line[2].startswith(b"HTTP/"):
            return self._reply(conn, 400, "bad request\n")
        method, target = line[0], line[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return self._reply(conn, 405, "only GET\n", head=False)
        if target not in (b"/metrics", b"/"):
            return self._reply(conn, 404, "metrics are at /metrics\n", head=method == b"HEAD")
        self.scrapes += 1
        return self._reply(conn, 200, self.render(), CONTENT_TYPE, head=method == b"HEAD")

    @staticmethod
    def _reply(conn: socket.socket, status: int, body: str,
               content_type: str = "text/plain; charset=utf-8", head: bool = False) -> None:
        data = body.encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found",
                  405: "Method Not Allowed"}[status]
        header = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        conn.sendall(header if head else header + data)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.ident is not None:  # started
            self.join(2)


def start_metrics(listen: str, info: dict[str, str],
                  on_error: Callable[[str], None]) -> MetricsServer | None:
    """The started server, or None after ``on_error(message)`` when it cannot listen."""
    try:
        server = MetricsServer(listen, info)
    except (OSError, ValueError) as exc:
        errno = getattr(exc, "errno", None)
        on_error(f"metrics_listen {listen}: {os.strerror(errno) if errno else exc}")
        return None
    server.start()
    log.info("metrics at http://%s:%d/metrics", *server.address)
    return server
