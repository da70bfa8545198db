"""The sensor daemon: kernel → reader → enrich → batch → hub (or stdout).

One thread runs the loop: poll the ring buffer (one native call returns a whole batch of
decoded events), enrich them, and hand full or old-enough batches to the sink, which never
blocks the loop. Health events go out every ``health_interval_s``. SIGTERM/SIGINT stop the
loop, flush and detach the BPF programs; SIGHUP re-reads the config file and applies the
sensitive-path list to the kernel filter without reloading the programs.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import sys
import time
from typing import Any

import click

from threatseer.common import configfile
from threatseer.sensor import hostinfo
from threatseer.sensor.config import SensorConfig
from threatseer.sensor.enrich import Enricher
from threatseer.sensor.health import HealthReporter
from threatseer.sensor.proctable import ProcessTable
from threatseer.sensor.ship import StdoutSink, hub_sink_from_config

log = logging.getLogger("threatseer.sensor")


TRIM_INTERVAL_S = 10.0
TRIM_AFTER_EVENTS = 10_000
METRICS_INTERVAL_S = 1.0


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
        """Whether to trim now. ``quiet``: the poll did not fill up. A burst is over after a
        second of those (its last batches acknowledged and freed by then)."""
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
        self.metrics: Any = None  # sensor/metrics.py MetricsServer, when metrics_listen is set

    # ---- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        if self._probe_factory is not None:
            self.probe = self._probe_factory(self.config)
            return
        from threatseer.native import Probe

        self.probe = Probe(
            ring_buffer_kib=self.config.ring_buffer_kib,
            sensitive_paths=self.config.sensitive_paths,
            watched_paths=self.config.watched_paths,
            self_tgid=os.getpid(),
        )


    def close(self) -> None:
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
        cfg = self.config
        seeded = self.procs.seed()
        log.info("sensor %s: %d processes seeded from /proc", self.sensor_id, seeded)
        # Events are short-lived, cycle-free dicts: keep the cyclic GC from rescanning them
        # (and the long-lived process table) at every few hundred allocations.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        batch: list[dict[str, Any]] = []
        batch_started = 0.0
        latency = cfg.batch_latency_ms / 1000.0
        next_health = time.monotonic() + cfg.health_interval_s
        self._emit(self.health.report(self.counters()))  # a first health event at start
        next_metrics = time.monotonic() + METRICS_INTERVAL_S
        if self.metrics is not None:
            self.metrics.update(self.counters())
        # Wait on the ring's wakeup fd, not in poll(): poll() returns at once whenever any
        # record is pending, so at a low rate the loop spun for one or two records at a time
        # (~1,000 turns/s at 1,000 events/s). The kernel signals the fd once wakeup_bytes are
        # pending (so a fast stream still wakes us long before the ring fills), else the
        # batch deadline ends the wait. After a poll that hit max_events, poll again at once.
        fileno = getattr(self.probe, "fileno", None)
        waiter = select.poll() if fileno is not None else None
        if waiter is not None:
            waiter.register(fileno(), select.POLLIN)
        max_events = cfg.batch_size
        drained = True
        while not self.stopping:
            now = time.monotonic()
            # Records polled into an empty batch may have waited since this wait began (a
            # lone record does not wake us): date the batch from here, or an event could
            # wait two latencies (p99 400 ms at 200 ms).
            polled_since = now
            wait = latency if not batch else max(0.0, batch_started + latency - now)
            # Never longer than the batch latency, so a stop signal is seen within it too.
            wait = min(wait, max(0.0, next_health - now))
            if waiter is None:
                events = self.probe.poll(timeout_ms=int(wait * 1000), max_events=max_events)
            else:
                if drained and wait > 0:
                    waiter.poll(int(wait * 1000))
                events = self.probe.poll(timeout_ms=0, max_events=max_events)
            drained = len(events) < max_events
            if self.trimmer.burst_over(len(events), quiet=len(events) < max_events // 2):
                self.procs.expire()  # a quiet host has no exits to expire the graveyard
                self.trimmer.trim()
            if events:
                self.events_in += len(events)
                if not batch:
                    batch_started = polled_since
                batch.extend(self.enricher.enrich(events))
            now = time.monotonic()
            if batch and (len(batch) >= cfg.batch_size or now - batch_started >= latency):
                self._send(batch)
                batch = []
            elif self.sink.pending:
                self.sink.flush()
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
                latency = cfg.batch_latency_ms / 1000.0
                # A shorter health interval applies now, not after the old one runs out.
                next_health = min(next_health, time.monotonic() + cfg.health_interval_s)
        # Drain what the kernel already has, then flush.
        if self.probe is not None:
            events = self.probe.poll(timeout_ms=0, max_events=1 << 20)
            if events:
                batch.extend(self.enricher.enrich(events))
        if batch:
            self._send(batch)
        self._emit(self.health.report(self.counters()))

    def _send(self, events: list[dict[str, Any]]) -> None:
        size = self.config.batch_size
        for i in range(0, len(events), size):
            self.sink.send(events[i : i + size])

    def _emit(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            self.enricher.stamp(ev)
        self.sink.send(events)
        for ev in events[1:]:
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
    sensor = Sensor(config, None, config_path)
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
    try:
        sensor.open()
    except Exception as exc:  # ProbeError and friends: one clear line, not a traceback
        click.echo(f"threatseer sensor: cannot start the eBPF probe: {exc}", err=True)
        sys.exit(1)
    from threatseer.sensor.privileges import drop_after_attach

    drop_after_attach()  # attached: CAP_BPF and friends are no longer needed
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
