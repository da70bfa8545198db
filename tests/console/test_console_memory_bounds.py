"""The console's memory is bounded: held alerts, processes in the trees (by count and by
time), events per process, sensors, and a slow live stream's queue."""

from __future__ import annotations

from console_helpers import shadow_read

from threatseer.hub.console.alerts import AlertFilter, AlertRing
from threatseer.hub.console.config import ConsoleConfig
from threatseer.hub.console.fleet import MAX_SENSORS, Fleet
from threatseer.hub.console.state import LISTENER_QUEUE, ConsoleState, Listener
from threatseer.hub.console.tree import MAX_CHILDREN, ProcessTree
from threatseer.hub.event_filter import EventFilter


def test_the_ring_keeps_the_newest_alerts_and_finds_them_by_number():
    ring = AlertRing(100)
    for i in range(250):
        ring.add({"event.kind": "alert", "event.risk_score": i, "host.name": f"h{i % 3}"}, i)
    assert len(ring) == 100 and ring.last_seq == 250
    assert ring.get(150) is None and ring.get(151).score == 150 and ring.get(250).score == 249
    newest = ring.newest(AlertFilter(EventFilter(hosts=("h0",))), 5)
    assert [h.seq for h in newest] == [250, 247, 244, 241, 238]
    assert [h.seq for h in ring.newest(AlertFilter(), 3, before=200)] == [199, 198, 197]
    assert [h.seq for h in ring.newest(AlertFilter(), 10, after=247)] == [250, 249, 248]
    # An event msgpack cannot hold is counted, not held, and breaks nothing.
    assert ring.add({"event.kind": "alert", "x": 2**80}, 0) is None and ring.unpackable == 1


def test_processes_are_forgotten_by_count_and_by_time():
    tree = ProcessTree(window_s=60, max_processes=100, events_per_process=3)
    for i in range(300):
        tree.note({"event.action": "exec", "process.entity_id": f"p{i}",
                   "process.executable": "/bin/true", "process.pid": i}, now=1000.0 + i)
    assert len(tree.procs) == 100 and "p199" not in tree.procs and "p299" in tree.procs
    for _ in range(50):  # events per process are bounded too
        tree.note({"event.action": "open", "process.entity_id": "p299", "file.path": "/x"}, 1300)
    assert len(tree.procs["p299"].events) == 3
    assert tree.expire(now=1300.0 + 30) == 70  # last active before 1270: forgotten
    assert min(int(e[1:]) for e in tree.procs) == 270
    assert tree.expire(now=10_000) == 30 and not tree.procs


def test_a_process_remembers_a_bounded_number_of_children():
    tree = ProcessTree()
    for i in range(500):
        tree.note({"event.action": "fork", "process.entity_id": f"c{i}",
                   "process.parent.entity_id": "parent", "process.pid": i}, 1.0)
    assert len(tree.procs["parent"].children) <= MAX_CHILDREN
    assert tree.procs["parent"].children[-1] == "c499"


def test_odd_field_types_from_a_sensor_do_not_break_the_tree():
    state = ConsoleState(ConsoleConfig(alerts_kept=100))
    odd = [{"event.action": "exec", "process.entity_id": ["not", "a", "string"]},
           {"event.action": "exec", "process.entity_id": "x" * 1000},
           {"event.action": "exec", "process.entity_id": "ok", "process.pid": "12",
            "process.parent.entity_id": 7, "@timestamp": 5, "process.name": {"a": 1}},
           "not a dict", None]
    state.ingest(odd, 1.0)
    assert list(state.tree.procs) == ["ok"]
    assert state.tree.tree({"process.entity_id": "ok"})["name"] == "?"


def test_tree_of_an_event_whose_process_was_never_seen():
    tree = ProcessTree()
    ev = shadow_read("web1", 1)[2]  # cat's open, without its exec
    root = tree.tree(ev)
    names = []
    node = root
    while node:
        names.append(node["name"])
        node = node["children"][-1] if node["children"] else None
    assert names == ["systemd", "sshd", "bash", "cat"]


def test_sensors_and_a_slow_stream_are_bounded():
    fleet = Fleet()
    for i in range(MAX_SENSORS + 50):
        fleet.observe([{"agent.id": f"s-{i}", "event.action": "exec"}], now=float(i))
    assert len(fleet.sensors) == MAX_SENSORS and "s-0" not in fleet.sensors
    ring = AlertRing(LISTENER_QUEUE * 2)
    listener = Listener(AlertFilter(kind="any"))
    helds = [ring.add({"event.kind": "alert"}, 0.0) for _ in range(LISTENER_QUEUE + 10)]
    listener.offer(helds)
    assert len(listener.queue) == LISTENER_QUEUE and listener.dropped == 10
    assert listener.take()[-1].seq == helds[-1].seq and not listener.queue


def test_a_fork_arriving_after_its_exec_does_not_rename_the_process():
    # The hub publishes one message per topic, so cat's exec may come before bash's fork.
    tree = ProcessTree()
    tree.note({"event.action": "exec", "process.entity_id": "c", "process.name": "cat",
               "process.command_line": "cat /etc/shadow", "@timestamp": "T2"}, 1.0)
    tree.note({"event.action": "fork", "process.entity_id": "c", "process.name": "bash",
               "process.parent.entity_id": "b", "@timestamp": "T1"}, 1.0)
    p = tree.procs["c"]
    assert (p.name, p.command_line, p.started, p.parent_id) == ("cat", "cat /etc/shadow", "T1",
                                                                 "b")
