"""The sensor daemon: kernel → reader → enrich → batch → hub (or stdout).

One thread runs the loop: poll the ring buffer (one native call returns a whole batch of
decoded events), enrich them, and hand full or old-enough batches to the sink, which never
blocks the loop. Health events go out every ``health_interval_s``. SIGTERM/SIGINT stop the
loop, flush and detach the BPF programs; SIGHUP re-reads the config file and applies the
sensitive-path list to the kernel filter without reloading the programs.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import sys
import threading
import time
from typing import Any

import click

from threatseer.common import configfile, ecs, wire
from threatseer.common.protect import DEFAULT_PROTECTED_PROCESSES
from threatseer.native.actions import EXEC, FORK
from threatseer.sensor import hostinfo
from threatseer.sensor.config import SensorConfig
from threatseer.sensor.enrich import Enricher
from threatseer.sensor.health import HealthReporter
from threatseer.sensor.pacing import GATHER_S, SendPacer
from threatseer.sensor.proctable import ProcessTable
from threatseer.sensor.response import Responder
from threatseer.sensor.ship import StdoutSink, hub_sink_from_config

log = logging.getLogger("threatseer.sensor")


TRIM_INTERVAL_S = 10.0
TRIM_AFTER_EVENTS = 10_000
METRICS_INTERVAL_S = 1.0
# Batches that may go without waiting after a quiet spell (sensor/pacing.py).
SEND_BURST = 4
# Below this many events a second the host is quiet enough to give a burst's heap back.
QUIET_RATE = 500.0
# The shortest interval between batches once the credits are spent (at low event rates).
MIN_INTERVAL_S = 0.007
# Held events that go at once when the kernel wakes the reader for wakeup_bytes pending
# (fewer: the wakeup came from a record that raced the hold, not from a big batch).
FORCED_MIN_EVENTS = 32
# Actions a command's next events follow within microseconds (its exec after the fork, its
# exit after the exec): a batch ending with one waits GATHER_S for them; any other goes as
# soon as a credit allows (a lone open at 100 events/s cost a second wakeup per event).
BURST_STARTS = frozenset((FORK, EXEC))
# The longest wait without a timer: signals wake the loop through their wakeup fd anyway.
WAIT_MAX_S = 60.0
# Events held behind an exec whose executable is being hashed, at most (then it goes
# without its digest: sensor/hashing.py): ~4 MiB of events, 40 ms of a flood.
MAX_HELD_FOR_HASH = 4096
# Buffers from this size on are mapped alone and unmapped when freed (glibc's threshold,
# fixed: native fix_mmap_threshold says why). A flood's uncompressed batch bodies are
# ~100-300 KiB; with glibc's moving threshold they grew the heap by ~4.5 MiB for good.
MMAP_THRESHOLD = 64 * 1024


def complete(item: Any) -> bool:
    """Whether nothing of the same command is expected right after ``item``: anything but a
    fork or an exec (runs of events the reader encoded itself are opens: sensor/enrich.py)."""
    return type(item) is not dict or item.get("event.action") not in BURST_STARTS


class _Waiter:
    """One epoll over what the loop waits for: the ring buffer (edge-triggered), the sink's
    sockets and a signal wakeup pipe (Python retries an interrupted wait, so a SIGTERM would
    otherwise wait for the timeout)."""

    def __init__(self, probe: Any, sink: Any, hashes: Any = None) -> None:
        self.probe = probe
        self.ep = select.epoll()
        self.ring = -1
        ring_fileno = getattr(probe, "ring_fileno", None)
        if ring_fileno is not None:
            self.ring = ring_fileno()
            self.ep.register(self.ring, select.EPOLLIN | select.EPOLLET)
        self.sink_fds = set(sink.fds())
        for fd in self.sink_fds:
            self.ep.register(fd, select.EPOLLIN)
        self.hashes = hashes
        self.hash_fd = hashes.fileno() if hashes is not None else -1
        if self.hash_fd >= 0:
            self.ep.register(self.hash_fd, select.EPOLLIN)
        self._rd, self._wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(self._rd, select.EPOLLIN)
        self._old_wakeup = signal.set_wakeup_fd(self._wr, warn_on_full_buffer=False) \
            if threading.current_thread() is threading.main_thread() else None
        self.sink_ready = True  # serve the sink once at start
        self._hold = None

    def hold(self, hold: bool) -> bool:
        """Tell the kernel whether we hold a batch; True when this ends a hold."""
        if hold == self._hold:
            return False
        if self.ring >= 0:
            self.probe.set_hold(hold)
        ended = self._hold is True
        self._hold = hold
        return ended

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True when the ring buffer signalled."""
        ring = self.ring < 0  # a probe without a ring fd: read it on a short timer
        self.sink_ready = False
        for fd, _ in self.ep.poll(min(timeout, 0.05) if ring else timeout):
            if fd == self.ring:
                ring = True
            elif fd == self._rd:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._rd, 512)
            elif fd == self.hash_fd:
                self.hashes.ready()  # a digest is in: the held batch may go
            else:
                self.sink_ready = True
        return ring

    def close(self) -> None:
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
        if self.ring >= 0:
            with contextlib.suppress(Exception):
                self.probe.set_hold(False)
        self.ep.close()
        os.close(self._rd)
        os.close(self._wr)


class HeapTrimmer:
    """Gives the heap freed after a burst back to the kernel (glibc keeps it: the RSS stayed
    at its peak, ~13 MiB above idle after 100k events/s). ~1.4 ms, so only once a burst is
    over (a second of quiet polls after TRIM_AFTER_EVENTS events), at most every
    TRIM_INTERVAL_S (a sustained stream would only fault it back), and at health events. Not
    tied to the health interval alone (30 s by default): that left a burst's heap in place."""

    def __init__(self) -> None:
        self.events = 0
        self.trimmed_at = 0.0
        self.quiet_since = 0.0

    def burst_over(self, polled: int, quiet: bool) -> bool:
        """Whether to trim now. ``quiet``: the event rate is low. A burst is over after a
        second of that (its last batches acknowledged and freed by then)."""
        self.events += polled
        if not quiet:
            self.quiet_since = 0.0
            return False
        if self.events < TRIM_AFTER_EVENTS:
            return False
        now = time.monotonic()
        if not self.quiet_since:
            self.quiet_since = now
        return now - self.quiet_since >= 1.0 and now - self.trimmed_at >= TRIM_INTERVAL_S

    def trim(self) -> None:
        now = time.monotonic()
        if now - self.trimmed_at >= TRIM_INTERVAL_S:
            from threatseer.native._bpf import trim_heap

            self.trimmed_at = now
            self.events = 0
            gc.collect()  # cyclic garbage the raised threshold let pile up, before the trim
            trim_heap()


class Sensor:
    def __init__(
        self, config: SensorConfig, sink: Any, config_path: str | None = None,
        probe_factory: Any = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.config_path = config_path
        self._probe_factory = probe_factory
        self.stopping = False
        self.reload_requested = False
        self.host_id = hostinfo.machine_id()
        self.sensor_id = hostinfo.sensor_id(config.sensor_id)
        self.procs = ProcessTable(self.host_id)
        self.enricher = Enricher(self.sensor_id, hostinfo.host_name(), self.host_id,
                                 proctable=self.procs)
        self.enricher.hashes.max_bytes = config.hash_max_bytes
        self.health = HealthReporter()
        self.trimmer = HeapTrimmer()
        self.probe: Any = None
        self.events_in = 0
        self.responder = Responder(
            self.procs, allow_kill=config.allow_kill,
            protected=[*DEFAULT_PROTECTED_PROCESSES, *config.protected_processes],
            max_kills_per_minute=config.max_kills_per_minute)
        self.enricher.on_verdict = self.responder.verdict_event
        self.metrics: Any = None  # sensor/metrics.py MetricsServer, when metrics_listen is set
        self.privileges_dropped = False  # set by main() once attached (sensor/privileges.py)

    # ---- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        if self._probe_factory is not None:
            self.probe = self._probe_factory(self.config)
            self.responder.probe = self.probe
            return
        from threatseer.native import Probe

        self.probe = self.responder.probe = Probe(
            ring_buffer_kib=self.config.ring_buffer_kib,
            sensitive_paths=self.config.sensitive_paths,
            watched_paths=self.config.watched_paths,
            self_tgid=os.getpid(),
            wakeup_bytes=self.config.batch_wakeup_kib * 1024,
            enforce=self.config.allow_kill and self.config.enforce_in_kernel,
        )
        if self.config.allow_kill and not self.config.enforce_in_kernel:
            self.probe.enforce_refused = "enforce_in_kernel is false"  # logged with the policy


    def close(self) -> None:
        self.enricher.hashes.close()
        if self.probe is not None:
            self.probe.close()
            self.probe = None

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            self.stopping = True

        def reload(signum: int, _frame: Any) -> None:
            self.reload_requested = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    # ---- main loop --------------------------------------------------------------------
    def run(self) -> None:
        seeded = self.procs.seed()
        log.info("sensor %s: %d processes seeded from /proc", self.sensor_id, seeded)
        # Events are short-lived, cycle-free dicts: keep the cyclic GC from rescanning them
        # (and the long-lived process table) at every few hundred allocations.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        if hasattr(self.probe, "set_identity"):
            # the reader stamps kernel events and, for a hub, encodes known processes' opens
            # itself (JSON on stdout needs dicts)
            self.enricher.attach(self.probe, encode=not isinstance(self.sink, StdoutSink))
        self._emit(self.health.report(self.counters()))  # a first health event at start
        waiter = _Waiter(self.probe, self.sink, self.enricher.hashes)
        try:
            self._loop(waiter)
        finally:
            waiter.close()
        # Drain what the kernel already has, then flush.
        batch: list[dict[str, Any]] = []
        if self.probe is not None:
            events = self.probe.poll(timeout_ms=0, max_events=1 << 20)
            if events:
                batch.extend(self.enricher.enrich(events))
        if batch:
            self._send(batch)
        self._emit(self.health.report(self.counters()))

    def _loop(self, waiter: _Waiter) -> None:
        """Wait for the kernel, the hub or a timer; read, enrich; send when the pacer says
        (sensor/pacing.py: ~2 ms after the kernel saw an event on a quiet host, coalesced
        under load).

        The ring buffer's fd is watched edge-triggered: the kernel wakes us for the first
        record after we drained the ring, or once ``wakeup_bytes`` are pending. While a batch
        is held, the programs are told so (``set_hold``) and wake us only for the latter: one
        wakeup per batch under a steady stream, not one per record."""
        cfg = self.config
        probe, sink = self.probe, self.sink
        now = time.monotonic()
        pacer = SendPacer(MIN_INTERVAL_S, cfg.batch_latency_ms / 1000.0, SEND_BURST, now)
        batch: list[dict[str, Any]] = []
        first_at = 0.0  # when the held batch's first events were read
        next_health = now + cfg.health_interval_s
        next_metrics = now + METRICS_INTERVAL_S
        if self.metrics is not None:
            self.metrics.update(self.counters())
        max_events = cfg.batch_size
        dict_positions = getattr(probe, "dict_positions", lambda: None)
        polled_count = getattr(probe, "polled", None) or (lambda: len(events))
        held = 0  # events in batch
        more = True  # records may be pending (at start, after a full poll)
        held_for_hash = False
        hashes = self.enricher.hashes
        while not self.stopping:
            now = time.monotonic()
            credit_wait = False  # holding for a credit with no batch: see first_at below
            if held_for_hash:
                late = hashes.due_in(now)
                hold, wake_at = True, now + (WAIT_MAX_S if late is None else late)
            elif batch:
                hold, wake_at = True, pacer.send_at(first_at, now)
            elif not pacer.ready(now):
                # no credit: records wait anyway; wake when one is back, then re-arm
                hold, wake_at = True, pacer.next_credit_at(now)
                credit_wait = True
            else:
                hold, wake_at = False, now + WAIT_MAX_S
            due = sink.due_in(now)
            if due is not None:
                wake_at = min(wake_at, now + due)
            if self.metrics is not None:
                wake_at = min(wake_at, next_metrics)
            timeout = 0.0 if more else max(0.0, min(wake_at, next_health) - now)
            held_through = waiter.hold(hold)
            if held_through:
                # Records that came while we held did not wake us, and the next ones will
                # not either while those are pending: read them before sleeping.
                timeout = 0.0
            ring_woke = waiter.wait(timeout)
            if waiter.sink_ready:
                sink.service()
                self._carry_out()
            events = probe.poll(timeout_ms=0, max_events=max_events)
            polled = polled_count() if events else 0  # runs of encoded events hold several
            more = polled >= max_events
            # quiet: the rate fell (small polls alone say nothing now: the pacing keeps
            # them small at 10,000 events/s, and trimming then only stalls the loop while
            # the heap is faulted back in)
            if self.trimmer.burst_over(polled, quiet=pacer.rate < QUIET_RATE):
                self.procs.expire()  # a quiet host has no exits to expire the graveyard
                self.trimmer.trim()
            now = time.monotonic()
            if events:
                self.events_in += polled
                pacer.note(polled, now)
                if not batch:
                    # Records read as a hold ends, or read while waiting for a credit (the
                    # credit's timer woke us), waited through that hold: they are gathered
                    # already and go in this turn (or as soon as the credit is back), not a
                    # GATHER_S wakeup later. Under a steady stream that wakeup was one in
                    # three of the loop's wakeups per batch (with the credit's and the ack's).
                    first_at = now - GATHER_S if held_through or credit_wait else now
                batch.extend(self.enricher.enrich(events, dict_positions()))
                held += polled
            if batch and (held >= cfg.batch_size or now >= pacer.send_at(first_at, now)
                          or (ring_woke and hold and held >= FORCED_MIN_EVENTS)
                          or held_for_hash or (complete(batch[-1]) and pacer.ready(now))):
                # a wakeup while holding is the kernel's "wakeup_bytes pending": a big batch
                n = self._sendable(batch, held, now)
                if n:
                    pacer.spend(now)
                    self._send(batch[:n] if n < len(batch) else batch)
                    batch = batch[n:]
                    held = wire.event_count(batch)
                # the rest waits for an executable's digest (sensor/hashing.py)
                held_for_hash = bool(batch)
                if held_for_hash:
                    first_at = now
            if self.metrics is not None and now >= next_metrics:
                next_metrics = now + METRICS_INTERVAL_S
                self.metrics.update(self.counters())
            if now >= next_health:
                next_health = now + cfg.health_interval_s
                self.procs.expire()
                self._emit(self.health.report(self.counters()))
                self.trimmer.trim()
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
                pacer.configure(cfg.batch_latency_ms / 1000.0)
                # A shorter health interval applies now, not after the old one runs out.
                next_health = min(next_health, time.monotonic() + cfg.health_interval_s)
            # A send reads the hub's replies on its way, commands among them, and the sink's
            # fd (ZeroMQ's ZMQ_FD, edge-triggered) then does not wake the wait for them.
            self._carry_out()
        if batch:
            self._send(batch)

    def _sendable(self, batch: list[Any], held: int, now: float) -> int:
        """How many items of ``batch`` (``held`` events) may go: all but an exec event waiting
        for its executable's digest and what came after it."""
        hashes = self.enricher.hashes
        if not hashes.waiting:
            return len(batch)
        waiting = hashes.first_waiting(now, held, MAX_HELD_FOR_HASH)
        if waiting is None:
            return len(batch)
        for i, ev in enumerate(batch):
            if ev is waiting:
                return i
        return len(batch)  # not in this batch (sent when it was let go)

    def _send(self, events: list[Any]) -> None:
        """Send in batches of at most batch_size events (a run of encoded events counts for
        its events and is never split)."""
        size = self.config.batch_size
        chunk: list[Any] = []
        n = 0
        for item in events:
            k = item.count if type(item) is wire.Encoded else 1
            if chunk and n + k > size:
                self.sink.send(chunk)
                chunk, n = [], 0
            chunk.append(item)
            n += k
        if chunk:
            self.sink.send(chunk)

    def _carry_out(self) -> None:
        """Carry out the hub's commands the sink has read (their events may read more)."""
        while True:
            commands = self.sink.take_commands()
            if not commands:
                return
            for cmd in commands:
                self._emit(self.responder.handle(cmd))

    def _emit(self, events: list[dict[str, Any]]) -> None:
        """Send events the sensor made itself (health, loss, kill) at once."""
        if not events:
            return
        for ev in events:
            self.enricher.stamp(ev)
        self.sink.send(events)
        for ev in events:
            if ev["event.action"] == ecs.SENSOR_LOSS:
                log.warning("loss: %s events (%s)", ev["threatseer.loss.events"],
                            ev["threatseer.loss.reason"])

    def counters(self) -> dict[str, int]:
        kernel = self.probe.counters() if self.probe is not None else {}
        out = {f"kernel_{k}": int(v) for k, v in kernel.items()}
        out.update({
            "events_in": self.events_in,
            "events_sent": self.sink.sent_events,
            "send_dropped": self.sink.dropped_events,
            "send_pending": self.sink.pending,
            "spool_disk_errors": getattr(getattr(self.sink, "spool", None), "disk_errors", 0),
            "processes": len(self.procs.procs),
            "not_container_cgroups": self.enricher.not_containers,
            # executables hashed on the worker thread (their exec waited), and let go without
            # their digest
            "hash_waits": self.enricher.hashes.waits,
            "hash_late": self.enricher.hashes.late,
            "encoded_events": getattr(getattr(self.probe, "contexts", None), "hits", 0),
            "kills": self.responder.kills,
        })
        return out

    def reload(self) -> None:
        """Re-read the config file; apply what can change live; keep the old on error."""
        if not self.config_path:
            return
        try:
            new = configfile.load(self.config_path, SensorConfig)
        except configfile.ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        if new.sensitive_paths != self.config.sensitive_paths:
            self.probe.set_sensitive_paths(new.sensitive_paths)
            log.info("sensitive paths updated (%d prefixes)", len(new.sensitive_paths))
        self.config.sensitive_paths = new.sensitive_paths
        if new.watched_paths != self.config.watched_paths:
            self.probe.set_watched_paths(new.watched_paths)
        self.config.watched_paths = new.watched_paths
        self.config.health_interval_s = new.health_interval_s
        self.config.batch_size = new.batch_size
        self.config.batch_latency_ms = new.batch_latency_ms
        if self.config.allow_kill and not new.allow_kill:
            # off at once; turning it back on takes a restart (the program is loaded then)
            self.responder.allow_kill = self.config.allow_kill = False
            if self.probe is not None and not getattr(self.probe, "enforce_refused", "off"):
                self.probe.set_exec_policy({})
            log.info("allow_kill is now false: kill commands and the exec policy are refused")
            if self.privileges_dropped:  # the daemon, not a sensor embedded in a test
                from threatseer.sensor.privileges import KEEP, drop_after_attach

                drop_after_attach(KEEP)
        if new.enforce_in_kernel != self.config.enforce_in_kernel:
            log.warning("enforce_in_kernel: the change takes a restart of the sensor")


@click.command("sensor")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config file (see docs/configuration.md); defaults apply without one.")
@click.option("--stdout", "to_stdout", is_flag=True,
              help="Print events as JSON lines instead of sending them to a hub.")
@click.option("--hub", "hub", metavar="ENDPOINT", help="Override the hub endpoint from the config.")
@click.option("--print-config", is_flag=True, help="Print the effective config and exit.")
def sensor_command(config_path: str | None, to_stdout: bool, hub: str | None,
                   print_config: bool) -> None:
    """Capture process, file, network and container events with eBPF.

    Needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE) and a kernel with BTF; once
    attached it keeps only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.
    SIGTERM/SIGINT stop it cleanly; SIGHUP reloads the config.
    """
    config = configfile.load(config_path, SensorConfig) if config_path else SensorConfig()
    if hub:
        config.hub = hub
    if print_config:
        import yaml

        click.echo(yaml.safe_dump(configfile.redacted(configfile.to_dict(config)),
                                  sort_keys=False))
        return
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from threatseer.native._bpf import fix_mmap_threshold

    fix_mmap_threshold(MMAP_THRESHOLD)
    sensor = Sensor(config, None, config_path)
    # The probe first: libbpf parses the kernel's BTF (~2x its 5 MiB) while loading, the
    # sensor's peak RSS; before the ZeroMQ threads, the spool and the metrics server exist
    # that peak is ~5 MiB lower.
    try:
        sensor.open()
    except Exception as exc:  # ProbeError and friends: one clear line, not a traceback
        click.echo(f"threatseer sensor: cannot start the eBPF probe: {exc}", err=True)
        sys.exit(1)
    if config.metrics_listen:
        from threatseer.common import __version__
        from threatseer.sensor.metrics import start_metrics

        def no_metrics(why: str) -> None:
            click.echo(f"threatseer sensor: {why}", err=True)
            sys.exit(2)

        sensor.metrics = start_metrics(config.metrics_listen, {
            "sensor_id": sensor.sensor_id, "version": __version__}, no_metrics)
    identity = sensor.enricher.identity
    if to_stdout:
        sensor.sink = StdoutSink(identity)
    else:
        try:
            sensor.sink = hub_sink_from_config(config, sensor.sensor_id, identity["host.name"],
                                               identity)
        except (ValueError, OSError) as exc:  # bad/missing keys, unusable state_dir
            click.echo(f"threatseer sensor: {exc}", err=True)
            sys.exit(2)
    sink = sensor.sink
    sensor.install_signal_handlers()
    from threatseer.sensor.privileges import KEEP, KILL, drop_after_attach

    # attached: CAP_BPF and friends are no longer needed
    sensor.privileges_dropped = drop_after_attach(KEEP + KILL if config.allow_kill else KEEP)
    log.info("sensor %s running, sending to %s", sensor.sensor_id,
             "stdout" if to_stdout else config.hub)
    try:
        sensor.run()
    finally:
        sensor.close()
        sink.close()
        if sensor.metrics is not None:
            sensor.metrics.stop()
        log.info("sensor stopped: %s", sensor.counters())
