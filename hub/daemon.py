"""The hub process: ingest -> score -> publish/outputs, plus metrics, admin and status.

One pipeline thread does the whole per-batch path (receive, decode, score, publish): on one
core, handing batches between Python threads would cost more than it saves. Side jobs
(Prometheus HTTP, the bundle admin server) run in their own threads and touch the pipeline only
through :meth:`Hub.activate`, a single attribute store; the web console, which reads every
published event, runs in a child process (:mod:`threatseer.hub.console.child`).

Delivery (docs/transport.md): each cycle's batches are admitted by the ledger (in order per
sensor, duplicates skipped), scored, published, then recorded in ONE ledger transaction, and
only after that commit acknowledged to their sensors (at most one ack per
``ingest.ack_delay_ms`` per sensor connection, see hub/acks.py).

Reload (SIGHUP, :meth:`Hub.reload`): the allow-lists' paths, the outputs, the bundle, the
actions and the log level change without a restart and without losing what is queued; the
rest (endpoints, keys, state_dir, ingest limits) is reported as needing one.

Graceful stop: the loop stops waiting for new input, then keeps taking whatever is already
queued on the socket until it is empty (bounded by ``stop_timeout_s``), scores and emits it,
flushes profiles, closes the outputs and lets the PUB socket linger so subscribers get it all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from typing import Any

import zmq

from threatseer.hub import heap
from threatseer.hub.acks import DelayedAcks
from threatseer.hub.config import HubConfig
from threatseer.hub.deadletter import FailedBatches
from threatseer.hub.engines.profile import ProfileEngine
from threatseer.hub.ingest import FAILED, STALE_EPOCH, Ingest, Message, Received
from threatseer.hub.ledger import AHEAD, DUPLICATE, NEW, STALE, Ledger, gap_event, refused_event
from threatseer.hub.metrics import HubMetrics
from threatseer.hub.outputs import Outputs
from threatseer.hub.profiles import ProfileStore
from threatseer.hub.publish import Publisher
from threatseer.hub.response import Responder
from threatseer.hub.rules.model import Bundle
from threatseer.hub.scoring import Pipeline
from threatseer.hub.transport import PUBLISH, Transport

log = logging.getLogger("threatseer.hub")
STATUS_FILE = "status.json"
LEDGER_FILE = "ledger.db"
STATUS_INTERVAL_S = 2.0
# glibc keeps the heap a burst of big batches grew (RSS stayed at its peak, and each new peak
# added to it): give it back this often, from the status thread (about 1 ms).
TRIM_INTERVAL_S = 30.0
# A batch is decoded, scored and published this many events at a time: a slice stays in the
# CPU cache from decoding to freeing (500 events at once ran 30% slower).
CHUNK_EVENTS = 128
# A cycle may end early (a sensor of it is done) once 1/EARLY_END_FRACTION of max_cycle_ms
# has passed: see Hub._rounds.
EARLY_END_FRACTION = 4


def load_start_bundle(cfg: HubConfig,
                      problems: list[str] | None = None) -> tuple[Bundle | None, Any]:
    """The bundle to start with, and the bundle store (None when unavailable).

    ``bundle:`` in the config is installed into the store (verified against the trusted keys,
    compiled, its tests run) and activated, with ``local_bundle:`` stacked on it (or, when
    that is empty, no local layer); without ``bundle`` the store's active stack (the last one
    published through the admin endpoint) is used. Any failure is logged and the hub starts on
    the last good bundle. The rule modules are imported lazily so the hub runs without them.
    Each failure is also appended to ``problems`` (when given), for the status and metrics:
    a hub that starts on an older bundle, or on none, must say so where operators look.
    """
    problems = problems if problems is not None else []
    store = None
    if cfg.admin.allow_unsigned:
        log.warning("admin.allow_unsigned: true: rule bundles are activated without a trusted "
                    "signature (anyone who can publish or place a bundle sets the rules)")
    try:
        from threatseer.hub.rules.store import BundleStore

        store = BundleStore(cfg.state_dir, trusted_keys=cfg.admin.trusted_signing_keys,
                            allow_unsigned=cfg.admin.allow_unsigned)
    except ImportError as exc:
        log.warning("bundle store unavailable (%s): no installed bundles", exc)
        problems.append(f"bundle store unavailable: {exc}")
    except Exception as exc:
        log.error("bundle store in %s unusable: %s", cfg.state_dir, exc)
        problems.append(f"bundle store in {cfg.state_dir} unusable: {exc}")
    if cfg.bundle:
        try:
            if store is not None:
                return _activate_configured(store, cfg), store
            if not cfg.admin.allow_unsigned:  # nothing to verify it with
                raise ValueError("signatures cannot be checked without the bundle store")
            from threatseer.hub.rules.bundle import load_bundle

            return load_bundle(cfg.bundle, cfg.local_bundle or None), store
        except ImportError as exc:
            log.error("cannot load bundle %s: rule loader unavailable (%s)", cfg.bundle, exc)
            problems.append(f"cannot load bundle {cfg.bundle}: rule loader unavailable ({exc})")
        except Exception as exc:
            log.error("cannot load bundle %s (the installed one, if any, stays): %s",
                      cfg.bundle, exc)
            problems.append(f"cannot load bundle {cfg.bundle}: {exc}")
    bundle = None
    if store is not None:
        try:
            bundle = store.active()
        except Exception as exc:
            log.error("cannot read the active bundle: %s", exc)
            problems.append(f"cannot read the active bundle: {exc}")
    if bundle is None:
        if not problems:
            problems.append("no bundle configured (bundle:) or installed")
        log.error("running with NO rules (%s): events get only the default action until a "
                  "bundle is activated", problems[-1])
    return bundle, store


def _activate_configured(store: Any, cfg: HubConfig) -> Bundle:
    """Install and activate the configured base, then the configured local layer (or none):
    the config decides the whole stack. The local layer is taken off first, so a new base is
    not checked against a layer the config no longer names."""
    from threatseer.hub.rules.store import StoreError

    previous = store.active_local_version()
    if previous is not None:
        try:
            store.unstack()
        except StoreError as exc:  # the active base itself is gone or broken
            log.warning("taking off the local layer: %s", exc)
    try:
        installed = store.install_path(cfg.bundle)
        bundle = store.activate(installed.manifest.version)
    except Exception:
        if previous is not None:  # the last good stack stays as it was
            with contextlib.suppress(StoreError):
                store.activate_local(previous)
        raise
    if cfg.local_bundle:
        try:
            layer = store.install_path(cfg.local_bundle)
            bundle = store.activate_local(layer.local.manifest.version)
        except Exception as exc:
            log.error("cannot stack the local layer %s, running %s alone: %s",
                      cfg.local_bundle, bundle.describe(), exc)
    return bundle


class Hub:
    """One hub: sockets and engines are set up here, threads run from :meth:`start` to
    :meth:`stop`. ``bundle`` overrides the config's bundle (tests, embedding)."""

    def __init__(self, cfg: HubConfig, bundle: Bundle | None = None,
                 stop_timeout_s: float = 10.0) -> None:
        self.cfg = cfg
        self.stop_timeout_s = stop_timeout_s
        heap.fix_mmap_threshold()  # big transient buffers never grow the arenas (hub/heap.py)
        self.metrics = HubMetrics()
        self.ctx = zmq.Context()
        self._stop = threading.Event()
        self._status_lock = threading.Lock()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._http: Any = None
        self._admin: Any = None
        self.console: Any = None
        self.store: Any = None
        # Why the hub runs an older bundle than configured, or none: status and metrics.
        self.bundle_problems: list[str] = []
        if bundle is None:
            bundle, self.store = load_start_bundle(cfg, self.bundle_problems)
        self.profile_store: ProfileStore | None = None
        profile = None
        if cfg.profiles.enabled:
            self.profile_store = ProfileStore(cfg.profile_db())
            profile = ProfileEngine(self.profile_store, cfg.profiles, background=True)
        self.pipeline = Pipeline(cfg.actions, bundle, profile)
        self.acks = DelayedAcks(cfg.ingest.ack_delay_ms / 1000.0)
        self.responder = Responder(cfg.response, self._send_to_sensor,
                                   helper_pids=self._helper_pids)
        self.responder.activate(self.pipeline.rules.bundle)
        self._note_bundle()
        self.transport = Transport(cfg, self.ctx, self.metrics)
        try:
            self.ledger = Ledger(os.path.join(cfg.state_dir, LEDGER_FILE),
                                 cfg.ingest.ledger_synchronous, cfg.ingest.ledger_keep_days,
                                 cfg.ingest.ledger_keep_batches)
            self.ingest = Ingest(self.ctx, cfg.ingest, self.metrics, self.transport,
                                 bindings=self.ledger)
            # The console reads what the PUB socket sends, so it needs the publisher even
            # when no outside subscriber may connect (publish.endpoint empty).
            self.publisher = (Publisher(self.ctx, cfg.publish.endpoint, cfg.publish.snd_hwm,
                                        secure=self._secure_pub)
                              if cfg.publish.endpoint or cfg.console.listen else None)
        except BaseException:
            self.transport.close()
            raise
        self._rebind_publisher = False
        self._new_bundle: Bundle | None = None
        self._new_outputs: Outputs | None = None  # from reload(), swapped in by the pipeline
        if self.transport.auth is not None:
            self.transport.auth.on_revoke = self._on_revoke
        self.outputs = Outputs(cfg.outputs, registry=self.metrics.registry)
        self.failed_batches = FailedBatches(cfg.state_dir,
                                            cfg.ingest.failed_batches_max_mib << 20)
        self._losses_at = time.monotonic()
        self._trimmed_at = time.time()
        self.emitted = 0
        self.failures = 0  # pipeline bugs caught (see _failed); should stay 0
        self._last_failure_log = -1e18
        self.started_at = time.time()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start side services and the pipeline thread (returns at once)."""
        self.outputs.start()
        if self.cfg.metrics.listen:
            self._http = self.metrics.serve(self.cfg.metrics.listen)
        self._start_admin()
        self._start_console()
        self._thread = threading.Thread(target=self._loop, name="hub-pipeline", daemon=True)
        self._thread.start()
        # status file and gauges off the pipeline thread: a fleet's status is a big JSON
        self._status_thread = threading.Thread(target=self._status_loop, name="hub-status",
                                               daemon=True)
        self._status_thread.start()
        log.info("hub: ingest %s, publish %s, bundle %s", self.ingest.endpoint,
                 self.publisher.endpoint if self.publisher else "-", self._bundle_name())

    def stop(self) -> None:
        """Graceful stop (see module docstring); returns when everything is emitted."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        else:  # never started: release what __init__ opened
            self._shutdown()
        if self._admin is not None:
            try:
                self._admin.stop()
            except Exception as exc:
                log.warning("admin server stop: %s", exc)
        if self.console is not None:  # after the pipeline: it sees the last events too
            self.console.stop()
        if self._http is not None:
            self._http.shutdown()
        self.transport.close()
        self.ctx.term()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def activate(self, bundle: Bundle) -> None:
        """Hot swap of the rule bundle (called from the admin thread)."""
        self.pipeline.activate(bundle)
        self._new_bundle = bundle  # the responder follows from the pipeline thread
        self.bundle_problems = []
        self._note_bundle()
        log.info("bundle activated: %s", self._bundle_name())

    def reload(self, cfg: HubConfig) -> list[str]:
        """Apply a re-read config (SIGHUP): allow-list paths, outputs, bundle (and its trust),
        actions and log level take effect now; returns the settings that changed but need a
        restart (logged). A bundle that does not load keeps the active one."""
        old = self.cfg
        logging.getLogger().setLevel(cfg.log_level.upper())
        self.transport.reload(cfg)
        self.pipeline.actions = cfg.actions
        if cfg.outputs != old.outputs:
            new = Outputs(cfg.outputs)  # metrics attached once the old outputs are closed
            new.start()
            self._new_outputs = new
        if self.store is not None:
            from threatseer.hub.rules.signing import load_verify_key

            self.store.trusted = [load_verify_key(k) for k in cfg.admin.trusted_signing_keys]
            self.store.allow_unsigned = cfg.admin.allow_unsigned
            if cfg.bundle:
                try:
                    self.activate(_activate_configured(self.store, cfg))
                except Exception as exc:
                    log.error("reload: cannot load bundle %s, keeping %s: %s", cfg.bundle,
                              self._bundle_name(), exc)
                    self.bundle_problems = [f"cannot load bundle {cfg.bundle}: {exc}"]
                    self._note_bundle()
        live = {"log_level", "outputs", "bundle", "local_bundle", "actions",
                "curve_allow_list", "curve_subscriber_allow_list"}
        restart = [f.name for f in dataclasses.fields(cfg)
                   if f.name not in live and getattr(cfg, f.name) != getattr(old, f.name)]
        if "admin" in restart and (cfg.admin.endpoint, cfg.admin.admin_keys) == \
                (old.admin.endpoint, old.admin.admin_keys):
            restart.remove("admin")  # only the bundle trust changed: applied above
        if restart:
            log.warning("reload: %s changed but take effect at the next restart",
                        ", ".join(restart))
        for name in restart:  # keep what runs and what it was started with
            setattr(cfg, name, getattr(old, name))
        self.cfg = cfg
        log.info("reloaded the configuration")
        return restart

    def _swap_outputs(self) -> None:
        """(pipeline thread) the reloaded outputs take over; the old ones deliver what they
        hold in the background."""
        new, self._new_outputs = self._new_outputs, None
        if new is None:
            return
        old, self.outputs = self.outputs, new

        def retire() -> None:
            old.close(timeout=self.stop_timeout_s)
            new.attach_metrics(self.metrics.registry)

        threading.Thread(target=retire, name="hub-outputs-retire", daemon=True).start()

    # -- internals -----------------------------------------------------------------------
    def _secure_pub(self, sock: zmq.Socket) -> None:
        self.transport.secure(sock, PUBLISH)

    def _on_revoke(self, domain: str) -> None:
        """(ZAP thread) keys left an allow-list: ingest checks every message anyway; the PUB
        socket is re-bound by the pipeline thread so subscribers handshake again."""
        if domain == PUBLISH:
            self._rebind_publisher = True

    def _bundle_name(self) -> str:
        return self.pipeline.rules.bundle.describe()

    def _note_bundle(self) -> None:
        b = self.pipeline.rules.bundle
        local = b.local
        self.metrics.rules.set(len(b.ruleset))
        self.metrics.bundle_problems.set(len(self.bundle_problems))
        self.metrics.set_bundle(b.manifest.name, b.manifest.version, b.digest,
                                (local.manifest.name, local.manifest.version, local.digest)
                                if local is not None else None)

    def _start_admin(self) -> None:
        admin = self.cfg.admin
        if not admin.endpoint:
            return
        try:
            from threatseer.hub.rules.admin import AdminServer
        except ImportError as exc:
            log.warning("admin server unavailable (%s): bundles cannot be published", exc)
            return
        if self.store is None:
            log.error("admin server needs the bundle store, which is unavailable")
            return
        try:
            self._admin = AdminServer(self.store, admin.endpoint, admin.admin_keys,
                                      on_activate=self.activate)
            self._admin.start()
        except Exception as exc:
            log.error("admin server on %s failed: %s", admin.endpoint, exc)
            self._admin = None

    def _start_console(self) -> None:
        """The web console (``console.listen``): a process of its own (so its work does not
        share this interpreter with the pipeline thread), handed every message the PUB
        socket sends (:meth:`Publisher.add_tap`). Like the admin server, a console that
        cannot start is logged, not fatal."""
        cfg = self.cfg
        if not cfg.console.listen or self.publisher is None:
            return
        try:
            from threatseer.hub.console.child import ConsoleProcess
        except ImportError as exc:
            log.error("console unavailable (%s): pip install 'threatseer[hub]'", exc)
            return
        console = ConsoleProcess(cfg.console, cfg.state_dir,
                                 cfg.profile_db() if cfg.profiles.enabled else None,
                                 cfg.log_level)
        try:
            console.start()
        except Exception as exc:
            log.error("console on %s failed: %s", cfg.console.listen, exc)
            console.stop()
            return
        tap = self.ctx.socket(zmq.PAIR)
        tap.setsockopt(zmq.SNDHWM, cfg.publish.snd_hwm)
        tap.setsockopt(zmq.LINGER, 1000)  # at a stop, what is queued still reaches it
        tap.connect(console.endpoint)
        self.publisher.add_tap(tap)
        self.console = console
        log.info("console: %s (process %s)", console.url, console.pid)

    def _loop(self) -> None:
        if self.publisher is not None:
            self._stop.wait(self.cfg.publish.start_grace_s)
        try:
            while not self._stop.is_set():
                try:
                    if self._new_outputs is not None:
                        self._swap_outputs()
                    got = self.ingest.take(self._wait_ms())
                    if self._new_bundle is not None:
                        bundle, self._new_bundle = self._new_bundle, None
                        self.responder.activate(bundle)
                    if got:
                        self._process(got, time.monotonic())
                    self._send_acks(time.monotonic())
                    self._report_losses()
                    if self._rebind_publisher and self.publisher is not None:
                        self._rebind_publisher = False
                        self.publisher.rebind()
                    now = time.time()
                    if self.pipeline.profile is not None:
                        self.pipeline.profile.maybe_flush(now)
                except Exception:  # a bug: log it, keep serving (never crash on input)
                    self._failed("pipeline cycle")
            deadline = time.monotonic() + self.stop_timeout_s
            while time.monotonic() < deadline:
                got = self.ingest.take(50)
                if not got:
                    break
                self._process(got, time.monotonic())
            self._send_acks(time.monotonic(), everything=True)
            self._report_losses(force=True)
        except Exception:
            log.exception("pipeline failed while stopping")
        finally:
            self._shutdown()

    def _wait_ms(self) -> int:
        """How long the pipeline may wait for input: 100 ms, less when an ack is due."""
        due = self.acks.next_due()
        if due is None:
            return 100
        return max(0, min(100, int((due - time.monotonic()) * 1000 + 0.999)))

    def _helper_pids(self) -> tuple[int | None, ...]:
        """The hub's own child processes (never killed by a response)."""
        return (self.console.pid,) if self.console is not None else ()

    def _send_to_sensor(self, peer: bytes, frame: bytes) -> bool:
        return self.ingest.send(peer, frame)

    def _send_acks(self, now: float, everything: bool = False) -> None:
        for (peer, _sid), epoch, seq in self.acks.due(now, everything):
            self.ingest.ack(peer, epoch, seq)

    def _failed(self, what: str) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._last_failure_log >= 10:
            self._last_failure_log = now
            log.exception("%s failed (%d failures so far)", what, self.failures)

    def _shutdown(self) -> None:
        if self.pipeline.profile is not None:
            self.pipeline.profile.close(time.time())
        self.outputs.close(timeout=self.stop_timeout_s)
        self._periodic(time.time())
        if self.publisher is not None:
            self.publisher.close()
        self.ingest.close()
        self.ledger.close()
        if self.profile_store is not None:
            self.profile_store.close()

    def _process(self, got: list[Message], taken: float) -> None:
        """Score, publish and acknowledge one cycle's batches, taken off the socket at
        ``taken`` (monotonic)."""
        pipeline, m = self.pipeline, self.metrics
        observe = m.publish_latency.observe
        ingest, ledger = self.ingest, self.ledger
        sensors = ingest.sensors
        tossed = logged = alerted = 0
        now = time.time()
        # (peer, sensor id) -> (epoch, batches the sensor had unacknowledged (0: unknown),
        # bytes of its batches in this cycle)
        acks: dict[tuple[bytes, str], tuple[int, int, int]] = {}
        stale: dict[tuple[bytes, str], tuple[int, int]] = {}  # -> (stale epoch, highest seq)
        cycle_s = self.cfg.ingest.max_cycle_ms / 1000
        start = time.monotonic()
        for msg in self._rounds(got, start + cycle_s, start + cycle_s / EARLY_END_FRACTION):
            sid = msg.sensor_id
            verdict = ledger.admit(sid, msg.epoch, msg.seq, msg.base, msg.dropped)
            if verdict.kind == STALE:
                # Refused and told as a loss; acknowledged so that the sender's spool of the
                # old epoch drains instead of coming back forever.
                ingest.refuse(msg, STALE_EPOCH, f"batch {msg.seq} of epoch {msg.epoch}, "
                              "older than the sensor's current epoch: dropped")
                old = stale.get((msg.peer, sid))
                stale[(msg.peer, sid)] = (msg.epoch, max(msg.seq, old[1] if old else 0))
                continue
            nbytes = sum(len(b) for b in msg.buffers)
            old_ack = acks.get((msg.peer, sid))
            if old_ack is not None and old_ack[0] == msg.epoch:
                nbytes += old_ack[2]
            acks[(msg.peer, sid)] = (msg.epoch, msg.seq - msg.base + 1 if msg.base else 0,
                                     nbytes)
            if verdict.restarted:
                log.info("sensor %s: new epoch %d (its spool is new)", sid, msg.epoch)
            if verdict.lost_batches:
                self._report_gap(msg, verdict.lost_batches, verdict.lost_events, now)
            if verdict.kind == DUPLICATE:
                m.child(m.duplicates, msg.label).inc()
                sensors[msg.label].duplicates += 1
                continue
            if verdict.kind == AHEAD:  # its predecessors are coming again (go-back resend)
                continue
            assert verdict.kind == NEW
            self.responder.on_batch(msg.peer)
            try:
                counts = self._batch(msg, now)
            except Exception as exc:  # isolated: this batch alone is given up, see _fail
                self._fail(msg, exc)
                continue
            if counts[0]:
                observe(time.monotonic() - taken)
            scored_in, emitted, n_tossed, n_logged, n_alerted = counts
            tossed += n_tossed
            logged += n_logged
            alerted += n_alerted
            ledger.scored(sid, msg.epoch, msg.seq, scored_in, emitted)
        try:
            ledger.commit()
        except Exception:  # not durable: no acks, the sensors resend (scored again)
            self._failed("ledger commit")
            acks.clear()
        mono = time.monotonic()
        for (peer, sid), (epoch, outstanding, nbytes) in acks.items():
            st = ledger.state.get(sid)
            if st is not None and st.epoch == epoch:
                now_ack = self.acks.add((peer, sid), epoch, st.high, outstanding, mono,
                                        nbytes)
                if now_ack is not None:
                    ingest.ack(peer, *now_ack)
        for (peer, _sid), (epoch, seq) in stale.items():
            ingest.ack(peer, epoch, seq)
        for action, n in (("toss", tossed), ("log", logged), ("alert", alerted)):
            if n:
                m.child(m.actions, action).inc(n)
        m.sync_engine_seconds(pipeline.engine_seconds)

    def _rounds(self, first: list[Message], deadline: float, early: float) -> Any:
        """The batches of one cycle: rounds of one batch per sensor (``first``, then what is
        queued or has arrived since) until ``deadline`` passes or, from ``early`` on, a
        sensor of the cycle has nothing more queued (see hub/ingest.py).

        The second rule is what keeps a quiet sensor's ack prompt beside a flood: its batch
        is committed and acknowledged a few ms after the round that scored it, instead of
        waiting for ``max_cycle_ms`` of the flooder's rounds; a cycle of one busy sensor
        still commits once per ``max_cycle_ms``. Not before ``early``: busy sensors whose
        queues run dry now and then would otherwise make a commit every round (5% of
        bench/hub_bench.py's throughput)."""
        ingest = self.ingest
        got = first
        seen: set[str] = set()
        while got:
            yield from got
            now = time.monotonic()
            if now >= deadline:
                return
            seen.update(msg.label for msg in got)
            ingest.intake()
            if now >= early and not seen <= ingest.queued_sensors():
                return
            got = ingest.next_round()

    def _batch(self, msg: Message, now: float) -> list[int]:
        """Decode, score and emit one admitted batch; its counts (events scored, emitted,
        tossed, logged, alerted). A batch refused whole (counted) scores nothing."""
        rec = self.ingest.open(msg)
        counts = [0, 0, 0, 0, 0]
        if rec is None or not rec.raws:  # refused (counted): resending will not help
            return counts
        for start in range(0, len(rec.raws), CHUNK_EVENTS):
            self._chunk(rec, start, now, counts, msg.peer)
        if self.publisher is not None:
            self.publisher.flush()
        emitted = counts[1]
        if emitted:
            self.ingest.sensors[rec.label].events_out += emitted
            self.metrics.child(self.metrics.events_out, rec.label).inc(emitted)
            self.emitted += emitted
        return counts

    def _fail(self, msg: Message, exc: BaseException) -> None:
        """A batch failed somewhere between decoding and the outputs (a bug, or input the
        checks did not foresee). Only that batch pays: it is counted (``failed``), told as
        its sensor's loss, kept whole in the failed-batches file, and recorded as done so it
        is acknowledged and the sensor's later batches and every other sensor go on. What it
        emitted before failing stays emitted."""
        self.failures += 1
        error = f"{type(exc).__name__}: {exc}"
        self.ingest.refuse(msg, FAILED, f"batch {msg.seq} failed ({error}): kept in "
                           f"{self.failed_batches.path}")
        now = time.monotonic()
        if now - self._last_failure_log >= 10:
            self._last_failure_log = now
            log.error("batch %d of %s failed", msg.seq, msg.sensor_id, exc_info=exc)
        try:
            self.failed_batches.add(msg.sensor_id, msg.epoch, msg.seq, error, msg.buffers)
        finally:
            if self.publisher is not None:
                self.publisher.flush()
            self.ledger.scored(msg.sensor_id, msg.epoch, msg.seq, msg.count, 0)

    def _report_losses(self, force: bool = False) -> None:
        """What the hub refused from each sensor since the last time, as loss events (one per
        sensor and reason per log interval: a flood of bad batches is one event)."""
        now = time.monotonic()
        if now - self._losses_at < self.cfg.ingest.log_interval_s and not force:
            return
        self._losses_at = now
        for sid, reason, batches, events in self.ingest.take_losses():
            self._emit_synthetic(refused_event(sid, reason, batches, events), sid,
                                 time.time())

    def _chunk(self, rec: Received, start: int, now: float, counts: list[int],
               peer: bytes = b"") -> None:
        """Decode, score and emit events ``start:start + CHUNK_EVENTS`` of ``rec``, adding to
        ``counts`` (scored, emitted, tossed, logged, alerted). Nothing of the slice outlives
        the call, so the next one reuses the memory while it is still in the CPU cache."""
        events = self.ingest.events(rec, start, start + CHUNK_EVENTS)
        if not events:
            return
        counts[0] += len(events)
        try:
            results = [self.pipeline.score(events, rec.sensor_id, rec.seq, now)]
        except Exception:  # engines guard each event; this is a bug: save what we can
            self._failed(f"scoring batch {rec.seq} of {rec.sensor_id}")
            results = self._score_one_by_one(rec, events, now)
        publisher, outputs = self.publisher, self.outputs
        for res in results:
            counts[2] += res.tossed
            counts[3] += res.logged
            counts[4] += res.alerted
            if not res.emitted:
                continue
            try:  # before publishing: the alerts say what became of their response
                self.responder.consider(res.emitted, rec.sensor_id, peer)
            except Exception:
                self._failed(f"response to batch {rec.seq} of {rec.sensor_id}")
            if publisher is not None:
                publisher.add(res.emitted)  # sent by _process once the batch is through
            if outputs.configs:
                outputs.emit_all(res.emitted)
            counts[1] += len(res.emitted)

    def _report_gap(self, msg: Message, batches: int, events: int, now: float) -> None:
        """A final sequence gap: a loss event through the pipeline (never silent)."""
        m = self.metrics
        m.child(m.lost_batches, msg.label).inc(batches)
        self.ingest.sensors[msg.label].lost_batches += batches
        log.warning("sensor %s: %d batches (%s events) before seq %d never arrived and can no "
                    "longer be resent: reported as lost", msg.sensor_id, batches,
                    events or "unknown", msg.seq)
        self._emit_synthetic(gap_event(msg.sensor_id, msg.epoch, msg.seq, batches, events),
                             msg.sensor_id, now, msg.seq)

    def _emit_synthetic(self, ev: dict[str, Any], sensor_id: str, now: float,
                        seq: int = 0) -> None:
        """Score and emit an event the hub made itself (a loss event) for ``sensor_id``."""
        try:
            res = self.pipeline.score([ev], sensor_id, seq, now)
            if res.emitted:
                if self.publisher is not None:
                    self.publisher.publish(res.emitted)
                for e in res.emitted if self.outputs.configs else ():
                    self.outputs.emit(e)
                self.emitted += len(res.emitted)
        except Exception:
            self._failed("emitting a loss event")

    def _score_one_by_one(self, rec: Received, events: list[dict[str, Any]],
                          now: float) -> list[Any]:
        out = []
        for ev in events:
            try:
                out.append(self.pipeline.score([ev], rec.sensor_id, rec.seq, now))
            except Exception:
                self.failures += 1  # this one event is lost; counted in status
        return out

    def _status_loop(self) -> None:
        """The status file and gauges every STATUS_INTERVAL_S, the first time at start (so
        ``status.json`` names the running hub as soon as it is up)."""
        while True:
            try:
                self._periodic(time.time())
            except Exception as exc:
                log.warning("status update failed: %s", exc)
            if self._stop.wait(STATUS_INTERVAL_S):
                return

    def _trim_heap(self, now: float) -> None:
        if now - self._trimmed_at < TRIM_INTERVAL_S:
            return
        self._trimmed_at = now
        heap.trim()

    def _periodic(self, now: float) -> None:
        self._trim_heap(now)
        m = self.metrics
        if self.console is not None and not self._stop.is_set():
            self.console.watch()  # started again if it died
        if self.pipeline.profile is not None:
            m.profiles.set(len(self.pipeline.profile.profiles))
        outputs = []
        try:
            outputs = self.outputs.status()
        except Exception as exc:
            log.warning("output status: %s", exc)
        self._write_status(now, outputs)

    def status(self, outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        b = self.pipeline.rules.bundle
        return {
            "updated_at": time.time(),
            "started_at": self.started_at,
            "pid": os.getpid(),
            "ingest": self.ingest.endpoint,
            "publish": self.publisher.endpoint if self.publisher else "",
            "bundle": {"name": b.manifest.name, "version": b.manifest.version,
                       "digest": b.digest, "source": b.source,
                       "rules": len(b.ruleset), "unsupported": len(b.unsupported),
                       "problems": list(self.bundle_problems),
                       "local": ({"name": b.local.manifest.name,
                                  "version": b.local.manifest.version,
                                  "digest": b.local.digest, "source": b.local.source}
                                 if b.local is not None else None)},
            "transport": {"plaintext": self.transport.plaintext,
                          "auth": (self.transport.auth.status()
                                   if self.transport.auth is not None else None)},
            "sensors": {sid: {"events_in": s.events_in, "events_out": s.events_out,
                              "batches": s.batches, "last_seq": s.last_seq,
                              "last_seen": s.last_seen, "host": s.host, "bad": dict(s.bad),
                              "duplicates": s.duplicates, "lost_batches": s.lost_batches}
                        for sid, s in list(self.ingest.sensors.items())},
            "outputs": outputs if outputs is not None else self.outputs.status(),
            "profiles": (len(self.pipeline.profile.profiles)
                         if self.pipeline.profile is not None else None),
            "penalty_box": self.ingest.penalty.status(),
            "emitted": self.emitted,
            "failures": self.failures,
            "response": {"kill_rules": len(self.responder.kill_rules),
                         "exec_policy": self.responder.policy.version,
                         **self.responder.counts},
            "engine_errors": {
                "static": self.pipeline.rules.static.errors,
                "dynamic": self.pipeline.rules.dynamic.errors,
                "profile": (self.pipeline.profile.errors
                            if self.pipeline.profile is not None else 0)},
            "console": ({"url": self.console.url, "pid": self.console.pid,
                         "restarts": self.console.restarts,
                         "dropped": self.publisher.tap_dropped}
                        if self.console is not None and self.publisher is not None else None),
            "admin": ({"endpoint": self.cfg.admin.endpoint, **self._admin.counters}
                      if self._admin is not None else None),
        }

    def _write_status(self, now: float, outputs: list[dict[str, Any]]) -> None:
        path = os.path.join(self.cfg.state_dir, STATUS_FILE)
        with self._status_lock:
            self._write_status_file(path, now, outputs)

    def _write_status_file(self, path: str, now: float, outputs: list[dict[str, Any]]) -> None:
        try:
            os.makedirs(self.cfg.state_dir, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(self.status(outputs), f, default=str)
            os.replace(path + ".tmp", path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)
