"""A scorer: one member of the consumer group on the batches topic.

Per cycle it takes what the consumer has (as soon as there is something, at most
``max_batches_per_txn`` batches), scores it, and for each batches partition p in it runs ONE
Kafka transaction: produce the scored events to partition p of the events topic and the
changed per-sensor delivery state to partition p of the state topic, add the consumed offsets
(``send_offsets_to_transaction``) and commit; the partitions' transactions run concurrently. For ``read_committed`` readers a batch's events,
its sensor's new state and the consumer position move together or not at all, so a scorer
killed at any point neither loses nor duplicates an event: whoever takes p over starts from
the committed position with the committed state.

Transactional ids are per partition (``<prefix>-<p>``): taking p over starts with
``init_transactions``, which fences the previous owner (a zombie can no longer commit) and
aborts its open transaction. This needs nothing else from the broker (no transaction
timeout, no consumer-group generation check), which is why it is used instead of one id per
scorer.

Duplicates: a sensor that fails over resends what its old gateway had not acknowledged, some
of which Kafka already holds. The delivery state, per sensor (epoch, highest batch scored), is
the hub's :class:`Ledger` admission logic over Kafka instead of SQLite: a batch at or below
the high mark is dropped, a final gap becomes a loss event. It survives rebalances because it
is written in the transaction and read back by the next owner of p, from the state topic up
to a barrier. A state record carries the input position it commits (``u``); records beyond
the committed position can only come from aborted transactions and are ignored (see
docs/cluster.md: some brokers show aborted records to read_committed readers).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, TopicPartition

from threatseer.common import wire
from threatseer.hub import heap
from threatseer.hub.cluster.bundles import BundleFeed
from threatseer.hub.cluster.commands import CommandQueue, Deliveries, command_id
from threatseer.hub.cluster.gateway import HEADER, LOSS, PEER
from threatseer.hub.cluster.kafka import (
    BARRIER,
    ClusterError,
    consumer,
    ensure_topics,
    producer,
    read_to_barrier,
    require,
    take,
)
from threatseer.hub.cluster.replication import ProfileReplicator
from threatseer.hub.cluster.status import Member
from threatseer.hub.config import HubConfig
from threatseer.hub.daemon import CHUNK_EVENTS, load_start_bundle
from threatseer.hub.engines.profile import ProfileEngine
from threatseer.hub.ingest import Ingest, Message
from threatseer.hub.ledger import (
    AHEAD,
    DUPLICATE,
    NEW,
    STALE,
    Ledger,
    SensorState,
    gap_event,
    refused_event,
)
from threatseer.hub.metrics import HubMetrics
from threatseer.hub.profiles import ProfileStore
from threatseer.hub.publish import Publisher
from threatseer.hub.response import Responder
from threatseer.hub.rules.model import Bundle
from threatseer.hub.scoring import Pipeline

log = logging.getLogger("threatseer.hub.cluster.scorer")
SOURCE = "src"  # events record header: "<batches offset>:<chunk>", the record's input position
LOSS_CHUNK = -2  # the <chunk> of a batch's loss events (-1: its gap event)
_pack = msgspec.msgpack.Encoder(enc_hook=str).encode
# How long a broker may hold a scorer's fetch when there is nothing new. Kafka answers as soon
# as data arrives, so this only paces idle polling; a broker that holds the fetch for the
# whole wait (tansu) adds up to this to every batch's latency.
FETCH_WAIT_MS = 5
_unpack_state = msgspec.msgpack.Decoder(dict[str, int]).decode
_unpack_loss = msgspec.msgpack.Decoder(list[tuple[str, int, int]]).decode
_REASON = re.compile(r"[a-z0-9-]{1,40}\Z")  # an ingest counter label


class PartitionLedger(Ledger):
    """The ledger's admission logic for the sensors of one batches partition, its state kept
    in Kafka (see the module doc) instead of SQLite."""

    def __init__(self) -> None:  # no SQLite: state comes from load(), goes out in records()
        self.path = ""
        self.state: dict[str, SensorState] = {}
        self._dirty: set[str] = set()
        self._scored: list[Any] = []
        self._gaps: list[Any] = []
        self.commits = 0

    def load(self, msg: Any, committed: int) -> None:
        """Apply one state record (last wins) unless it is beyond the committed position."""
        try:
            rec = _unpack_state(msg.value() or b"")
            sid = msg.key().decode()
        except (msgspec.DecodeError, UnicodeDecodeError, AttributeError):
            return
        if rec.get("u", 1 << 62) > committed:
            return  # written by a transaction that did not commit
        self.state[sid] = SensorState(rec.get("e", 0), rec.get("h", 0), rec.get("d", 0))

    def records(self, upto: int) -> list[tuple[bytes, bytes]]:
        """(key, value) of every sensor whose state changed; clears the changes."""
        out = [(sid.encode(), _pack({"e": st.epoch, "h": st.high, "d": st.dropped, "u": upto}))
               for sid in self._dirty for st in (self.state[sid],)]
        self._dirty.clear()
        self._scored.clear()
        self._gaps.clear()
        return out

    def commit(self) -> None:  # the scoring transaction is the commit
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class Owned:
    """A batches partition this scorer owns: its transactional producer and ledger."""

    partition: int
    producer: Any
    ledger: PartitionLedger
    # This cycle's scored events records (key, value, headers), produced in its transaction,
    # and the events for the tap once it committed.
    out: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    published: list[list[dict[str, Any]]] = field(default_factory=list)
    # The input position the scored output above commits (None: nothing waits to commit).
    upto: int | None = None
    # The partition's transaction in flight (one at a time): its future and tap events.
    job: tuple[Any, list[list[dict[str, Any]]]] | None = None
    # Kill commands of this cycle (produced at once; its transaction commits only once they
    # are stored), and the processes they name (forgotten by the responder if the
    # transaction fails: decided again); ``job_asked``: those of the transaction in flight.
    commands: Deliveries = field(default_factory=Deliveries)
    asked: list[str] = field(default_factory=list)
    job_asked: list[str] = field(default_factory=list)
    started: float = 0.0  # monotonic time the last transaction was handed to the pool


class Scorer(Member):
    def __init__(self, cfg: HubConfig, bundle: Bundle | None = None) -> None:
        require(cfg.cluster)
        heap.fix_mmap_threshold()  # as the hub (hub/heap.py)
        self.cfg = cfg
        self.ccfg = ccfg = cfg.cluster
        counts = ensure_topics(ccfg)
        self.partitions = counts[ccfg.batches_topic]
        self.name = ccfg.member()
        self.metrics = HubMetrics()
        self.store: Any = None
        self.bundle_problems: list[str] = []  # why it runs an older bundle, or none
        if bundle is None:
            bundle, self.store = load_start_bundle(cfg, self.bundle_problems)
        elif cfg.admin.trusted_signing_keys:
            from threatseer.hub.rules.store import BundleStore

            self.store = BundleStore(cfg.state_dir, cfg.admin.trusted_signing_keys)
        self.profile_store: ProfileStore | None = None
        profile = None
        if cfg.profiles.enabled:
            self.profile_store = ProfileStore(cfg.profile_db())
            profile = ProfileEngine(self.profile_store, cfg.profiles, background=True)
        self.pipeline = Pipeline(cfg.actions, bundle, profile)
        # The kill action: the hub's responder, its commands going to the commands topic,
        # read by the gateways (hub/cluster/commands.py).
        self.commands = CommandQueue(ccfg, self.name)
        self.responder = Responder(cfg.response, self.commands.send, command_id=command_id)
        self.responder.activate(self.pipeline.rules.bundle)
        self._new_bundle: Bundle | None = None  # for the responder, on the scoring thread
        self._note_bundle()
        self.ingest = Ingest(None, cfg.ingest, self.metrics)
        self.ctx = zmq.Context()
        self.publisher = None
        if cfg.publish.endpoint:
            from threatseer.hub.transport import PUBLISH, Transport

            self.transport = Transport(cfg, self.ctx, self.metrics)
            self.publisher = Publisher(self.ctx, cfg.publish.endpoint, cfg.publish.snd_hwm,
                                       secure=lambda s: self.transport.secure(s, PUBLISH))
        self.replicator = ProfileReplicator(ccfg, profile) if profile is not None else None
        self.feed = BundleFeed(ccfg, self.store, self.activate)
        self.owned: dict[int, Owned] = {}
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="scorer-txn")
        self.consumer = consumer(ccfg, **{
            "group.id": ccfg.scorer_group, "enable.auto.commit": False,
            "isolation.level": "read_committed", "auto.offset.reset": "earliest",
            "session.timeout.ms": ccfg.session_timeout_ms,
            "heartbeat.interval.ms": max(100, ccfg.session_timeout_ms // 6),
            "partition.assignment.strategy": "roundrobin",
            "fetch.wait.max.ms": FETCH_WAIT_MS, "client.id": f"threatseer-scorer-{self.name}"})
        self.emitted = self.batches = self.duplicates = self.transactions = 0
        self.aborts = self.failures = 0
        self.txn_seconds = 0.0
        self._interval = ccfg.txn_interval_ms / 1000
        self._member("scorer")

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._serve()
        if self.replicator is not None:
            self.replicator.start()
        self.feed.start()
        self.consumer.subscribe([self.ccfg.batches_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self._run_loop()
        log.info("scorer %s: %s -> %s, bundle %s", self.name, self.ccfg.batches_topic,
                 self.ccfg.events_topic, self.bundle_version())

    def stop(self) -> None:
        self._halt()
        self.commands.close()
        self.feed.stop()
        if self.replicator is not None:
            self.replicator.stop()
        if self.pipeline.profile is not None:
            self.pipeline.profile.close(time.time())
        if self.profile_store is not None:
            self.profile_store.close()
        if self.publisher is not None:
            self.publisher.close()
            self.transport.close()
        self.ctx.term()

    def activate(self, bundle: Bundle) -> None:
        """Swap the rules (from the bundle feed's thread: one attribute store)."""
        self.pipeline.activate(bundle)
        self._new_bundle = bundle
        self.bundle_problems = []
        self._note_bundle()

    def _note_bundle(self) -> None:
        b = self.pipeline.rules.bundle
        self.metrics.set_bundle(b.manifest.name, b.manifest.version, b.digest)
        self.metrics.rules.set(len(b.ruleset))
        self.metrics.bundle_problems.set(len(self.bundle_problems))

    def bundle_version(self) -> str:
        return self.pipeline.rules.bundle.manifest.version

    def counters(self) -> dict[str, Any]:
        b = self.pipeline.rules.bundle
        prof = self.pipeline.profile
        return {"bundle": {"name": b.manifest.name, "version": b.manifest.version,
                           "digest": b.digest, "rules": len(b.ruleset),
                           "problems": list(self.bundle_problems)},
                "bundle_feed": self.feed.status(),
                "partitions": sorted(self.owned), "batches": self.batches,
                "emitted": self.emitted, "duplicates": self.duplicates,
                "transactions": self.transactions, "aborts": self.aborts,
                "failures": self.failures, "bad_input": self.ingest.bad_total,
                "response": {"kill_rules": len(self.responder.kill_rules),
                             **self.responder.counts},
                "profiles": len(prof.profiles) if prof is not None else None,
                "replication": self.replicator.status() if self.replicator else None}

    # -- partitions -----------------------------------------------------------------------
    def _on_assign(self, c: Any, parts: list[TopicPartition]) -> None:
        for tp in parts:
            try:
                self.owned[tp.partition] = self._take_over(tp.partition)
            except Exception:
                log.exception("cannot take partition %d over", tp.partition)
                self.failures += 1
                raise

    def _on_revoke(self, c: Any, parts: list[TopicPartition]) -> None:
        for tp in parts:
            own = self.owned.pop(tp.partition, None)
            if own is not None:
                if own.job is not None:  # let it commit; if it fails, the next owner redoes it
                    self._settle(own, rewind=False)
                self.responder.forget(own.asked)  # scored, never committed: redone elsewhere
                own.producer.flush(5)

    def _take_over(self, p: int) -> Owned:
        """Fence p's previous owner, then read p's committed delivery state."""
        ccfg = self.ccfg
        prod = producer(ccfg, **{
            "transactional.id": f"{ccfg.transactional_id_prefix}-{p}", "acks": "all",
            # commit_transaction sends what is queued at once, whatever linger.ms says:
            # a long linger lets a transaction's records go out as one request.
            "linger.ms": 100, "compression.type": ccfg.events_compression,
            "transaction.timeout.ms": max(60_000, ccfg.session_timeout_ms * 4),
            "client.id": f"threatseer-scorer-{self.name}-{p}"})
        prod.init_transactions(30)  # fences the old owner, aborts its open transaction
        committed = self.consumer.committed([TopicPartition(ccfg.batches_topic, p)], 30)[0]
        upto = committed.offset if committed.offset >= 0 else 0
        ledger = PartitionLedger()

        def barrier(nonce: bytes) -> None:
            prod.begin_transaction()
            prod.produce(ccfg.state_topic, key=BARRIER, value=nonce, partition=p)
            prod.commit_transaction(30)

        n = read_to_barrier(ccfg, barrier, ccfg.state_topic, p,
                            lambda m: ledger.load(m, upto))
        log.info("partition %d taken over at offset %d: %d sensors (%d state records)", p,
                 upto, len(ledger.state), n)
        return Owned(p, prod, ledger)

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        ccfg = self.ccfg
        wait = ccfg.input_wait_ms / 1000
        try:
            while not self._stop.is_set():
                # Wait for input (at most the interval), then take what else has arrived: a
                # cycle starts as soon as there is something, and grows with the load (what
                # arrives while one cycle commits is the next one's), so a quiet stream is not
                # held back to fill a batch and a busy one commits many batches at once.
                busy = any(o.job is not None or o.upto is not None
                           for o in self.owned.values())
                msgs = take(self.consumer, ccfg.max_batches_per_txn, 0.001 if busy else wait)
                now = time.time()
                if self._new_bundle is not None:
                    bundle, self._new_bundle = self._new_bundle, None
                    self.responder.activate(bundle)
                if self.replicator is not None:
                    self.replicator.apply()
                if msgs or busy:
                    self._cycle(msgs, now)
                if self.replicator is not None:
                    self.replicator.publish(now)
                if self.pipeline.profile is not None:
                    self.pipeline.profile.maybe_flush(now)
        except Exception:
            log.exception("scorer loop failed")
        finally:  # what is scored commits before the consumer leaves
            with contextlib.suppress(Exception):
                for _ in range(2):
                    for own in list(self.owned.values()):
                        if own.job is not None:
                            self._settle(own, rewind=False)
                    self._submit(self.consumer.consumer_group_metadata(), force=True)
            if self.publisher is not None:
                self.publisher.flush()
            self._pool.shutdown()
            try:
                self.consumer.close()
            except Exception as exc:
                log.warning("consumer close: %s", exc)

    def _cycle(self, msgs: list[Any], now: float) -> None:
        """Score every partition's batches (this thread: the pipeline is not thread-safe) and
        hand each partition's transaction to a thread of the pool. Transactions are a few
        round trips to the brokers each: the partitions' run concurrently, and while they
        commit this thread takes and scores the next input, which goes out in the
        partition's next transaction once the one in flight committed."""
        self._settle_finished()
        by_part: dict[int, list[Any]] = defaultdict(list)
        for m in msgs:
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume: %s", m.error())
                continue
            by_part[m.partition()].append(m)
        meta = self.consumer.consumer_group_metadata()
        for p, part_msgs in by_part.items():
            own = self.owned.get(p)
            if own is None:
                continue
            for m in part_msgs:
                self._batch(own, m, now)
            own.upto = part_msgs[-1].offset() + 1
        self._submit(meta)
        if self.publisher is not None:
            self.publisher.flush()

    def _settle_finished(self) -> None:
        for own in list(self.owned.values()):
            if own.job is not None and own.job[0].done():
                self._settle(own)

    def _submit(self, meta: Any, force: bool = False) -> None:
        """Start the transaction of every partition with scored output, none in flight and
        the last one started ``txn_interval_ms`` ago (output scored meanwhile waits for the
        next one: the loop then polls briefly). ``force``: whenever the last one started."""
        now = time.monotonic()
        wait = 0.0 if force else self._interval
        for own in list(self.owned.values()):
            if own.upto is None or own.job is not None or now - own.started < wait:
                continue
            own.started = now
            state = own.ledger.records(own.upto)
            out, published, upto, commands = own.out, own.published, own.upto, own.commands
            own.out, own.published, own.upto, own.commands = [], [], None, Deliveries()
            own.job_asked, own.asked = own.asked, []
            own.job = (self._pool.submit(self._commit, own.producer, own.partition, out, state,
                                         upto, meta, commands), published)


    def _settle(self, own: Owned, rewind: bool = True) -> bool:
        """Wait for ``own``'s transaction in flight: count it and tap its events, or (failed)
        rewind the partition to what is committed (``rewind``). True when it committed."""
        future, published = own.job  # type: ignore[misc]
        own.job = None
        took = future.result()
        if isinstance(took, KafkaException):
            # its alerts never committed (its commands may not be stored): deciding again
            # (the replay, or the next owner) sends them again, with the same ids
            self.responder.forget(own.job_asked)
            if rewind:
                self._failed_transaction(own, took)
            return False
        self.transactions += 1
        self.txn_seconds += took
        if self.publisher is not None:
            for events in published:
                self.publisher.add(events)
        return True

    def _commit(self, prod: Any, p: int, out: list[tuple[bytes, bytes, Any]],
                state: list[tuple[bytes, bytes]], upto: int, meta: Any,
                commands: Deliveries) -> float | KafkaException:
        """One partition's transaction, once its kill commands are stored (else it fails and
        the partition is scored again): its events records, its changed delivery state and
        its consumed offset. Returns the seconds it took, or the error (handled by the loop's
        thread, which owns the consumer)."""
        ccfg = self.ccfg
        t0 = time.perf_counter()
        failed = self.commands.settle(commands)
        if failed is not None:
            return KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT,
                                             f"kill command not stored: {failed}"))
        try:
            prod.begin_transaction()
            for key, value, headers in out:
                prod.produce(ccfg.events_topic, value=value, key=key, partition=p,
                             headers=headers)
            for key, value in state:
                prod.produce(ccfg.state_topic, key=key, value=value, partition=p)
            prod.send_offsets_to_transaction(
                [TopicPartition(ccfg.batches_topic, p, upto)], meta, 30)
            prod.commit_transaction(30)
        except KafkaException as exc:
            return exc
        return time.perf_counter() - t0

    def _failed_transaction(self, own: Owned, exc: KafkaException) -> None:
        """Abort; the partition is read again from its committed offset with its committed
        state (as when it is taken over), or given up if we were fenced."""
        err = exc.args[0] if exc.args else None
        self.aborts += 1
        self.responder.forget(own.asked)  # scored after the failed one: scored again
        log.warning("transaction on partition %d failed (%s): rewinding", own.partition, exc)
        p = own.partition
        try:
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                own.producer.abort_transaction(30)
            elif isinstance(err, KafkaError) and err.fatal():
                raise ClusterError("fenced: another scorer owns the partition now")
            self.owned[p] = self._take_over(p)
            committed = self.consumer.committed([TopicPartition(self.ccfg.batches_topic, p)],
                                                30)[0]
            self.consumer.seek(TopicPartition(self.ccfg.batches_topic, p,
                                              max(committed.offset, 0)))
        except Exception as again:
            log.error("partition %d given up until the next rebalance: %s", p, again)
            self.owned.pop(p, None)

    def _batch(self, own: Owned, m: Any, now: float) -> None:
        """Admit, score and produce one batch (inside the partition's transaction)."""
        headers = dict(m.headers() or ())
        if LOSS in headers and HEADER not in headers:
            self._gateway_losses(own, m, headers[LOSS], now)
            return
        header, body = headers.get(HEADER), m.value()
        frames = [header or b"", body or b""]
        try:
            h = wire.decode_header(frames)
        except wire.WireError as exc:  # not from a gateway of ours: counted, skipped
            self.ingest.bad("unknown", exc.reason, f"batches offset {m.offset()}: {exc}")
            return
        sid = h["sid"]
        self.ingest.stats(sid)
        msg = Message(frames, sid, self.ingest.label(sid), b"", h.get("e", 0), h["seq"],
                      h.get("b", 0), h.get("d", 0), h["n"])
        ledger = own.ledger
        verdict = ledger.admit(sid, msg.epoch, msg.seq, msg.base, msg.dropped)
        if verdict.kind == STALE:
            self.ingest.refuse(msg, "stale-epoch", f"batch {msg.seq} of an old epoch")
            self._report_losses(own, m.offset(), now)
            return
        if verdict.lost_batches:
            gap = gap_event(sid, msg.epoch, msg.seq, verdict.lost_batches, verdict.lost_events)
            res = self.pipeline.score([gap], sid, msg.seq, now)
            self._emit(own, m.offset(), -1, sid, res.emitted)
        if verdict.kind == DUPLICATE:
            self.duplicates += 1
            self.ingest.sensors[msg.label].duplicates += 1
            return
        if verdict.kind == AHEAD:
            return
        assert verdict.kind == NEW
        self.batches += 1
        self._send_policy(own, sid, headers)
        rec = self.ingest.open(msg)
        scored = 0
        if rec is not None:
            for start in range(0, len(rec.raws), CHUNK_EVENTS):
                events = self.ingest.events(rec, start, start + CHUNK_EVENTS)
                if not events:
                    continue
                scored += len(events)
                res = self.pipeline.score(events, rec.sensor_id, rec.seq, now)
                self._respond(own, sid, res.emitted, m.timestamp())
                self._emit(own, m.offset(), start, sid, res.emitted)
        ledger.scored(sid, msg.epoch, msg.seq, scored, 0)
        self._report_losses(own, m.offset(), now)

    def _send_policy(self, own: Owned, sid: str, headers: dict[str, bytes]) -> None:
        """The exec policy to the batch's connection (gateway and ZeroMQ routing id), if it
        has not had this one: the hub's ``on_batch``, through the commands topic. Stamped
        with the time of sending, not of the batch: a policy is not stale for coming from
        an old batch (a scorer that started after its sensors, a backlog)."""
        peer = headers.get(PEER)
        if not peer or len(peer) > 256:
            return  # a gateway of an older version: no policy, the scorer kills after exec
        self.commands.target = own.commands
        self.commands.stamp = 0
        try:
            self.responder.on_batch(b"\0".join((sid.encode(), headers.get("gw") or b"", peer)))
        finally:
            self.commands.target = None

    def _respond(self, own: Owned, sid: str, events: list[dict[str, Any]],
                 stamp: tuple[int, int]) -> None:
        """The kill decisions on these scored events (before they are packed: the alerts say
        what became of their response); ``stamp``: when their batch reached a gateway."""
        if not events or not self.responder.actions:
            return
        queued = own.commands.sent
        self.commands.target = own.commands
        self.commands.stamp = stamp[1] if stamp[0] != TIMESTAMP_NOT_AVAILABLE else 0
        try:
            self.responder.consider(events, sid, sid.encode())
        except Exception:  # a bug: the alerts still go out, without their response
            log.exception("response to a batch of sensor %s failed", sid)
        finally:
            self.commands.target = None
        if own.commands.sent > queued:
            own.asked.extend(ev["process.entity_id"] for ev in events
                             if ev.get("threatseer.response.status") in ("sent", "dry-run"))

    def _gateway_losses(self, own: Owned, m: Any, value: bytes | None, now: float) -> None:
        """A gateway's loss record: what it refused of the record key's sensor (spoofed,
        epoch, too large...), told as that sensor's ``sensor-loss`` events like the hub's,
        in the transaction of the record's offset (so once)."""
        try:
            sid = m.key().decode()
            losses = _unpack_loss(value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                AttributeError) as exc:
            self.ingest.bad("unknown", wire.BAD_HEADER, f"batches offset {m.offset()}: "
                            f"not a loss record: {exc}")
            return
        if not wire.SENSOR_ID.match(sid):
            self.ingest.bad("unknown", wire.BAD_HEADER, f"batches offset {m.offset()}: "
                            "loss record of an invalid sensor id")
            return
        self.ingest.stats(sid)
        label = self.ingest.label(sid)
        for reason, batches, events in losses[:64]:
            if _REASON.match(reason) and 0 <= batches < 1 << 40 and 0 <= events < 1 << 40:
                self.ingest.lost(label, reason, batches, events)
        self._report_losses(own, m.offset(), now)

    def _report_losses(self, own: Owned, offset: int, now: float) -> None:
        """What the checks refused of this batch (a whole undecodable body, ill-typed
        events...), told as ``sensor-loss`` events of its sensor, as the hub does. Emitted in
        the batch's own transaction, so a replayed batch tells it once."""
        for sid, reason, batches, events in self.ingest.take_losses():
            res = self.pipeline.score([refused_event(sid, reason, batches, events)], sid, 0,
                                      now)
            self._emit(own, offset, LOSS_CHUNK, sid, res.emitted)

    def _emit(self, own: Owned, offset: int, chunk: int, sid: str,
              events: list[dict[str, Any]]) -> None:
        if not events:
            return
        own.out.append((sid.encode(), _pack(events), [(SOURCE, f"{offset}:{chunk}".encode())]))
        self.emitted += len(events)
        if self.publisher is not None:
            own.published.append(events)

