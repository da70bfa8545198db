"""The hub process: ingest -> score -> publish/outputs, plus metrics, admin and status.

One pipeline thread does the whole per-batch path (receive, decode, score, publish): on one
core, handing batches between Python threads would cost more than it saves. Side jobs
(Prometheus HTTP, the bundle admin server) run in their own threads and touch the pipeline only
through :meth:`Hub.activate`, a single attribute store; the web console, which reads every
published event, runs in a child process (:mod:`threatseer.hub.console.child`).

Delivery (docs/transport.md): each cycle's batches are admitted by the ledger (in order per
sensor, duplicates skipped), scored, published, then recorded in ONE ledger transaction, and
only after that commit acknowledged to their sensors.

Graceful stop: the loop stops waiting for new input, then keeps taking whatever is already
queued on the socket until it is empty (bounded by ``stop_timeout_s``), scores and emits it,
flushes profiles, closes the outputs and lets the PUB socket linger so subscribers get it all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any

import zmq

from threatseer.hub.config import HubConfig
from threatseer.hub.engines.profile import ProfileEngine
from threatseer.hub.ingest import Ingest, Message, Received
from threatseer.hub.ledger import AHEAD, DUPLICATE, NEW, STALE, Ledger, gap_event
from threatseer.hub.metrics import HubMetrics
from threatseer.hub.outputs import Outputs
from threatseer.hub.profiles import ProfileStore
from threatseer.hub.publish import Publisher
from threatseer.hub.rules.model import Bundle
from threatseer.hub.scoring import Pipeline
from threatseer.hub.transport import PUBLISH, Transport

log = logging.getLogger("threatseer.hub")
STATUS_FILE = "status.json"
LEDGER_FILE = "ledger.db"
STATUS_INTERVAL_S = 2.0
# A batch is decoded, scored and published this many events at a time: a slice stays in the
# CPU cache from decoding to freeing (500 events at once ran 30% slower).
CHUNK_EVENTS = 128


def load_start_bundle(cfg: HubConfig) -> tuple[Bundle | None, Any]:
    """The bundle to start with, and the bundle store (None when unavailable).

    ``bundle:`` in the config is installed into the store (verified against the trusted keys,
    compiled, its tests run) and activated, with ``local_bundle:`` stacked on it (or, when
    that is empty, no local layer); without ``bundle`` the store's active stack (the last one
    published through the admin endpoint) is used. Any failure is logged and the hub starts on
    the last good bundle. The rule modules are imported lazily so the hub runs without them.
    """
    store = None
    try:
        from threatseer.hub.rules.store import BundleStore

        store = BundleStore(cfg.state_dir, trusted_keys=cfg.admin.trusted_signing_keys)
    except ImportError as exc:
        log.warning("bundle store unavailable (%s): no installed bundles", exc)
    except Exception as exc:
        log.error("bundle store in %s unusable: %s", cfg.state_dir, exc)
    if cfg.bundle:
        try:
            if store is not None:
                return _activate_configured(store, cfg), store
            from threatseer.hub.rules.bundle import load_bundle

            return load_bundle(cfg.bundle, cfg.local_bundle or None), store
        except ImportError as exc:
            log.error("cannot load bundle %s: rule loader unavailable (%s)", cfg.bundle, exc)
        except Exception as exc:
            log.error("cannot load bundle %s, keeping the installed one: %s", cfg.bundle, exc)
    if store is not None:
        try:
            return store.active(), store
        except Exception as exc:
            log.error("cannot read the active bundle: %s", exc)
    return None, store


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
        if bundle is None:
            bundle, self.store = load_start_bundle(cfg)
        self.profile_store: ProfileStore | None = None
        profile = None
        if cfg.profiles.enabled:
            self.profile_store = ProfileStore(cfg.profile_db())
            profile = ProfileEngine(self.profile_store, cfg.profiles, background=True)
        self.pipeline = Pipeline(cfg.actions, bundle, profile)
        self._note_bundle()
        self.transport = Transport(cfg, self.ctx, self.metrics)
        try:
            self.ledger = Ledger(os.path.join(cfg.state_dir, LEDGER_FILE),
                                 cfg.ingest.ledger_synchronous, cfg.ingest.ledger_keep_days)
            self.ingest = Ingest(self.ctx, cfg.ingest, self.metrics, self.transport)
            # The console reads what the PUB socket sends, so it needs the publisher even
            # when no outside subscriber may connect (publish.endpoint empty).
            self.publisher = (Publisher(self.ctx, cfg.publish.endpoint, cfg.publish.snd_hwm,
                                        secure=self._secure_pub)
                              if cfg.publish.endpoint or cfg.console.listen else None)
        except BaseException:
            self.transport.close()
            raise
        self._rebind_publisher = False
        if self.transport.auth is not None:
            self.transport.auth.on_revoke = self._on_revoke
        self.outputs = Outputs(cfg.outputs, registry=self.metrics.registry)
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
        self._note_bundle()
        log.info("bundle activated: %s", self._bundle_name())

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
                    got = self.ingest.take(100)
                    if got:
                        self._process(got, time.monotonic())
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
        except Exception:
            log.exception("pipeline failed while stopping")
        finally:
            self._shutdown()

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
        acks: dict[tuple[bytes, str], int] = {}  # (peer, sensor id) -> epoch
        for msg in got:
            sid = msg.sensor_id
            verdict = ledger.admit(sid, msg.epoch, msg.seq, msg.base, msg.dropped)
            if verdict.kind == STALE:
                ingest.bad(msg.label, "stale-epoch", f"batch {msg.seq} of epoch {msg.epoch}, "
                           f"older than the sensor's current epoch: dropped")
                continue
            acks[(msg.peer, sid)] = msg.epoch
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
            rec = ingest.open(msg)
            if rec is None or not rec.raws:  # refused (counted): resending will not help
                ledger.scored(sid, msg.epoch, msg.seq, 0, 0)
                continue
            counts = [0, 0, 0, 0, 0]  # events scored, emitted, tossed, logged, alerted
            for start in range(0, len(rec.raws), CHUNK_EVENTS):
                self._chunk(rec, start, now, counts)
            if self.publisher is not None:
                self.publisher.flush()
            observe(time.monotonic() - taken)
            scored_in, emitted, n_tossed, n_logged, n_alerted = counts
            tossed += n_tossed
            logged += n_logged
            alerted += n_alerted
            if emitted:
                sensors[rec.label].events_out += emitted
                m.child(m.events_out, rec.label).inc(emitted)
                self.emitted += emitted
            ledger.scored(sid, msg.epoch, msg.seq, scored_in, emitted)
        try:
            ledger.commit()
        except Exception:  # not durable: no acks, the sensors resend (scored again)
            self._failed("ledger commit")
            acks.clear()
        for (peer, sid), epoch in acks.items():
            st = ledger.state.get(sid)
            if st is not None and st.epoch == epoch:
                ingest.ack(peer, epoch, st.high)
        for action, n in (("toss", tossed), ("log", logged), ("alert", alerted)):
            if n:
                m.child(m.actions, action).inc(n)
        m.sync_engine_seconds(pipeline.engine_seconds)

    def _chunk(self, rec: Received, start: int, now: float, counts: list[int]) -> None:
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
        ev = gap_event(msg.sensor_id, msg.epoch, msg.seq, batches, events)
        try:
            res = self.pipeline.score([ev], msg.sensor_id, msg.seq, now)
        except Exception:
            self._failed("scoring a loss event")
            return
        if res.emitted:
            if self.publisher is not None:
                self.publisher.publish(res.emitted)
            for e in res.emitted if self.outputs.configs else ():
                self.outputs.emit(e)
            self.emitted += len(res.emitted)

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

    def _periodic(self, now: float) -> None:
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
            "emitted": self.emitted,
            "failures": self.failures,
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
