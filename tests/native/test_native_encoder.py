"""The reader's own msgpack (native/encode/) is byte for byte what the sensor would send for
the same record through the dict path: the decoder's dict, enriched, encoded by
common/wire.py. Real records from the real kernel, each run through both paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import msgspec
import pytest

from threatseer.common import wire
from threatseer.native import Probe
from threatseer.sensor.enrich import Enricher
from threatseer.sensor.proctable import ProcessTable

TSR_OPEN = (4).to_bytes(2, "little")  # records.h: enum tsr_kind, the record's first field


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    watched = tmp_path / "w"
    watched.mkdir()
    probe = Probe(ring_buffer_kib=1024, sensitive_paths=[f"{watched}/"], self_tgid=0)
    procs = ProcessTable("test-host")
    procs.seed()
    enricher = Enricher("s-test", "host", "test-host", proctable=procs)
    enricher.attach(probe, encode=True)
    records: list[bytes] = []
    probe.capture_records(records)
    try:
        yield probe, enricher, watched, records
    finally:
        probe.close()


def both_ways(probe: Probe, enricher: Enricher, record: bytes) -> tuple[bytes, bytes]:
    """(the dict path's body, the encoder's body) for one record, with the same sequence."""
    probe._live().set_identity("s-test-1-", 500)
    ev = probe.decode_record(record, encode=False)
    assert type(ev) is dict
    dict_body = wire.encode_body(enricher.enrich([ev]))  # also registers the context
    probe._live().set_identity("s-test-1-", 500)
    enc = probe.decode_record(record)
    assert type(enc) is wire.Encoded, "the open took the dict path"
    return dict_body, wire.encode_body([enc])


def opens_of(records: list[bytes], probe: Probe, path: str) -> list[bytes]:
    """The captured open records of ``path`` (only opens are decoded again: an exec, fork
    or exit record passing the decoder twice would make contexts stale)."""
    out = []
    for r in records:
        if r[:2] != TSR_OPEN:
            continue
        ev = probe.decode_record(r, encode=False)
        if type(ev) is dict and ev.get("file.path") == path:
            out.append(r)
    return out


def test_encoded_opens_equal_the_dict_path(setup) -> None:
    probe, enricher, watched, records = setup
    cases = []
    f = watched / "plain"
    f.write_text("x")
    os.close(os.open(f, os.O_RDONLY))
    os.close(os.open(f, os.O_WRONLY | os.O_TRUNC))
    os.close(os.open(f, os.O_RDWR | os.O_CREAT))
    with pytest.raises(FileNotFoundError):  # a failure: negative result, outcome failure
        os.open(watched / "missing", os.O_RDONLY)
    long = watched / ("d" * 200) / ("e" * 100)  # str16 path header
    long.parent.mkdir()
    long.write_text("x")
    os.close(os.open(long, os.O_RDONLY))
    probe.poll(timeout_ms=100, max_events=1 << 20)
    for path in (f, watched / "missing", long):
        got = opens_of(records, probe, str(path))
        assert got, f"no open of {path}"
        cases.extend(got)
    assert len(cases) >= 5
    for record in cases:
        dict_body, enc_body = both_ways(probe, enricher, record)
        assert enc_body == dict_body, (msgspec.msgpack.decode(dict_body),
                                       msgspec.msgpack.decode(enc_body))
    assert probe.contexts.hits >= len(cases)


def test_another_process_and_its_exec_and_a_non_ascii_path(setup) -> None:
    probe, enricher, watched, records = setup
    odd = watched / "caf\u00e9"
    odd.write_text("x")
    sh = watched.parent / f"ts-enc-{uuid.uuid4().hex[:6]}"
    shutil.copyfile("/bin/sh", sh)
    sh.chmod(0o755)
    target = watched / "t"
    target.write_text("x\n")
    # a child with its own name and arguments opens twice (and lives on): the encoded form of
    # its second open carries its own context
    child = subprocess.Popen([str(sh), "-c", f"read x < {target}; read x < {target}; "
                              "sleep 30"])
    try:
        got: list[bytes] = []
        for _ in range(50):
            enricher.enrich(probe.poll(timeout_ms=100, max_events=1 << 20))
            got = opens_of(records, probe, str(target))
            if len(got) == 3:  # the test's own write, then the child's two reads
                break
        assert len(got) == 3
        dict_body, enc_body = both_ways(probe, enricher, got[2])
        assert enc_body == dict_body
        assert msgspec.msgpack.decode(enc_body)[0]["process.executable"] == str(sh)
        # the child, this process, the child again: each encoded event carries its own
        # task's fields (the encoder keeps them per task)
        for record in (got[1], got[0], got[2]):
            dict_body, enc_body = both_ways(probe, enricher, record)
            assert enc_body == dict_body
    finally:
        child.kill()
        child.wait()
    # a path that is not ASCII always takes the dict path
    os.close(os.open(odd, os.O_RDONLY))
    probe.poll(timeout_ms=100, max_events=1 << 20)
    rec = opens_of(records, probe, str(odd))[-1]  # (the first: the test's write_text)
    enricher.enrich([probe.decode_record(rec, encode=False)])
    assert type(probe.decode_record(rec)) is dict


def test_an_exec_makes_the_context_stale(setup) -> None:
    probe, enricher, watched, records = setup
    target = watched / "t"
    target.write_text("x\n")
    cat = watched.parent / f"ts-enc-cat-{uuid.uuid4().hex[:6]}"
    shutil.copyfile("/bin/cat", cat)
    cat.chmod(0o755)
    # sh opens, waits (its context gets registered), then becomes cat, which opens again
    child = subprocess.Popen(["/bin/sh", "-c", f"read x < {target}; read x < /dev/stdin; "
                              f"exec {cat} {target} {target}"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            enricher.enrich(probe.poll(timeout_ms=100, max_events=1 << 20))
            if len(opens_of(records, probe, str(target))) >= 2:
                break
        first = opens_of(records, probe, str(target))[-1]
        assert type(probe.decode_record(first)) is wire.Encoded  # registered: encodable
        child.communicate(b"go\n", timeout=10)
        evs = []
        for _ in range(50):
            evs += enricher.enrich(probe.poll(timeout_ms=100, max_events=1 << 20))
            if len(opens_of(records, probe, str(target))) >= 4:
                break
        after = [e for e in evs if type(e) is dict and e.get("file.path") == str(target)
                 and e["process.pid"] == child.pid]
        assert after and all(e["process.executable"] == str(cat) for e in after)
        assert not [e for e in evs if type(e) is not dict
                    and any(x.get("process.pid") == child.pid for x in wire.decode_encoded(e))]
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    probe.contexts.forget(os.getpid())  # what the sensor says when a parent leaves its table
    rec = opens_of(records, probe, str(target))[0]  # the test's own write
    assert type(probe.decode_record(rec)) is dict


def test_a_flood_of_encoded_opens_comes_in_runs_below_the_mmap_threshold(setup) -> None:
    """Runs end at ~24 KiB (native/_bpf.pyx RUN_MAX_BYTES): each run's bytes then stay below
    the sensor's fixed mmap threshold (sensor/daemon.py) instead of being a fresh mapping
    faulted in page by page. Split or not, the events are all there, in order."""
    from threatseer.sensor.daemon import MMAP_THRESHOLD

    probe, enricher, watched, _ = setup
    f = watched / "flood"
    f.write_text("x")
    os.close(os.open(f, os.O_RDONLY))  # the dict path, which registers this process
    enricher.enrich(probe.poll(timeout_ms=100, max_events=1 << 20))
    for _ in range(400):
        os.close(os.open(f, os.O_RDONLY))
    batch = probe.poll(timeout_ms=100, max_events=1 << 20)
    runs = [item for item in batch if type(item) is wire.Encoded]
    assert sum(r.count for r in runs) >= 400, "the opens took the dict path"
    assert len(runs) > 1
    assert max(len(r.data) for r in runs) < min(MMAP_THRESHOLD, 24 * 1024 + 4096)
    seqs = [ev["event.sequence"] for r in runs for ev in wire.decode_encoded(r)
            if ev["file.path"] == str(f)]
    assert len(seqs) >= 400 and seqs == sorted(seqs)
