"""Sequence rules: the query language's `sequence`/`sample`, and the hub's bounded state."""

from __future__ import annotations

from pathlib import Path

import pytest

from threatseer.hub.config import ActionConfig
from threatseer.hub.rules import sequence as seqmod
from threatseer.hub.rules.bundle import BundleError, load_bundle
from threatseer.hub.rules.query.errors import QueryError
from threatseer.hub.rules.query.parser import parse_rule_condition
from threatseer.hub.rules.testing import run_tests
from threatseer.hub.scoring import Pipeline

RULES = """
rules:
  - rule: drop_run
    description: download, chmod, run
    condition: >-
      sequence by process.parent.entity_id within 60s
        [event.action = exec and process.name = curl]
        [event.action = exec and process.name = chmod]
        [event.action = exec and process.executable startswith /tmp/]
    score: 80
    tags: [attack.t1105]
    output: "ran {process.executable}"
  - rule: pipe
    description: curl and sh side by side
    condition: sample by process.parent.entity_id within 5s [event.action = exec and process.name = curl] [event.action = exec and process.name = sh]
    score: 70
    tags: [attack.t1059.004]
  - rule: connect_then_shell
    description: a connect, then a shell child of the connecting process
    condition: >-
      sequence within 10s
        [event.action = connect] by process.entity_id
        [event.action = exec and process.name = sh] by process.parent.entity_id
    score: 90
    tags: [attack.t1059.004]
  - rule: scan
    description: many ports
    condition: sequence by process.entity_id within 5s [event.action = connect] with runs=5, distinct=destination.port
    score: 60
    tags: [attack.t1046]
"""


def bundle(tmp_path: Path, rules: str = RULES):
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "manifest.yaml").write_text("name: t\nversion: '1'\n")
    (tmp_path / "rules" / "r.yaml").write_text(rules)
    return load_bundle(tmp_path)


def ex(name: str, parent: str, ts: int = 0, **kw) -> dict:
    return {"event.action": "exec", "process.name": name, "process.parent.entity_id": parent,
            "process.entity_id": f"{parent}-{name}", "process.executable": f"/usr/bin/{name}",
            "@timestamp": f"2024-01-01T00:{ts // 60:02d}:{ts % 60:02d}Z", "agent.id": "s1",
            **kw}


def fired(rs, events: list[dict]) -> list[list[str]]:
    return [[i["rule"] for i in rs.match_dicts(ev)] for ev in events]


def test_ordered_steps_in_window_on_one_key_fire_on_the_last_event(tmp_path) -> None:
    rs = bundle(tmp_path).ruleset
    run = ex("x", "p", 30, **{"process.executable": "/tmp/x"})
    assert fired(rs, [ex("curl", "p", 0), ex("chmod", "p", 10), run]) == [[], [], ["drop_run"]]
    assert fired(rs, [run]) == [[]]  # a completed sequence starts over
    # out of order, on another parent, or too late: nothing
    assert fired(rs, [ex("chmod", "q", 0), ex("curl", "q", 1), {**run, "process.parent.entity_id": "q"}]) == [[], [], []]
    assert fired(rs, [ex("curl", "r", 0), ex("chmod", "s", 1), {**run, "process.parent.entity_id": "s"}]) == [[], [], []]
    assert fired(rs, [ex("curl", "t", 0), ex("chmod", "t", 10),
                      {**run, "process.parent.entity_id": "t", "@timestamp": "2024-01-01T00:01:30Z"}]) == [[], [], []]


def test_the_indicator_describes_the_steps(tmp_path) -> None:
    rs = bundle(tmp_path).ruleset
    rs.match_dicts(ex("curl", "p", 0, **{"process.command_line": "curl -o /tmp/x http://h/x"}))
    rs.match_dicts(ex("chmod", "p", 1, **{"process.command_line": "chmod +x /tmp/x"}))
    (ind,) = rs.match_dicts(ex("x", "p", 2, **{"process.executable": "/tmp/x",
                                               "process.command_line": "/tmp/x"}))
    assert ind["type"] == "sequence" and ind["score"] == 80 and ind["tags"] == ["attack.t1105"]
    assert ind["extra_info"]["sequence"] == ["exec curl -o /tmp/x http://h/x",
                                             "exec chmod +x /tmp/x", "exec /tmp/x"]
    assert ind["extra_info"]["seconds"] == 2.0 and ind["extra_info"]["output"] == "ran /tmp/x"


def test_sample_fires_in_either_order(tmp_path) -> None:
    rs = bundle(tmp_path).ruleset
    assert fired(rs, [ex("sh", "a"), ex("curl", "a")]) == [[], ["pipe"]]
    assert fired(rs, [ex("curl", "b"), ex("sh", "b")]) == [[], ["pipe"]]
    assert fired(rs, [ex("sh", "c"), ex("sh", "c")]) == [[], []]


def test_steps_may_join_on_different_fields(tmp_path) -> None:
    rs = bundle(tmp_path).ruleset
    connect = {"event.action": "connect", "process.entity_id": "py1", "agent.id": "s1",
               "@timestamp": "2024-01-01T00:00:00Z"}
    shell = ex("sh", "py1", 1)
    assert fired(rs, [connect, shell]) == [[], ["connect_then_shell"]]
    assert fired(rs, [connect, ex("sh", "other", 1)]) == [[], []]


def test_runs_count_distinct_values(tmp_path) -> None:
    rs = bundle(tmp_path).ruleset

    def conn(port: int) -> dict:
        return {"event.action": "connect", "process.entity_id": "e", "agent.id": "s1",
                "destination.port": port, "@timestamp": "2024-01-01T00:00:00Z"}

    assert fired(rs, [conn(p) for p in (1, 1, 2, 2, 3, 4)])[-1] == []
    assert fired(rs, [conn(5)]) == [["scan"]]


def test_one_sensor_never_completes_anothers_sequence(tmp_path) -> None:
    rs = bundle(tmp_path).ruleset
    run = ex("x", "p", 2, **{"process.executable": "/tmp/x"})
    rs.match_dicts(ex("curl", "p", 0, **{"agent.id": "s1"}))
    rs.match_dicts(ex("chmod", "p", 1, **{"agent.id": "s1"}))
    assert rs.match_dicts({**run, "agent.id": "s2"}) == []
    assert [i["rule"] for i in rs.match_dicts(run)] == ["drop_run"]


def test_state_is_bounded_and_a_flooding_sensor_evicts_only_its_own(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(seqmod, "MAX_KEYS_PER_AGENT", 10)
    monkeypatch.setattr(seqmod, "MAX_KEYS", 25)
    rs = bundle(tmp_path).ruleset
    (seq,) = [s for s in rs.sequences if s.name == "drop_run"]
    rs.match_dicts(ex("curl", "victim", 0, **{"agent.id": "good"}))
    for i in range(500):  # a noisy sensor starts many partial sequences
        rs.match_dicts(ex("curl", f"p{i}", 1, **{"agent.id": "noisy"}))
    assert seq.count <= 25 and seq.per_agent["noisy"] <= 10 and seq.evicted >= 490
    rs.match_dicts(ex("chmod", "victim", 2, **{"agent.id": "good"}))
    (ind,) = rs.match_dicts(ex("x", "victim", 3, **{"agent.id": "good",
                                                    "process.executable": "/tmp/x"}))
    assert ind["rule"] == "drop_run"


def test_partial_matches_expire_with_the_window(tmp_path) -> None:
    rs = bundle(tmp_path).ruleset
    (seq,) = [s for s in rs.sequences if s.name == "drop_run"]
    for i in range(20):
        rs.match_dicts(ex("curl", f"p{i}", 0))
    assert seq.count == 20
    rs.match_dicts(ex("curl", "late", 0, **{"@timestamp": "2024-01-01T00:05:00Z"}))
    assert seq.count == 1


def test_the_hub_pipeline_scores_a_sequence_across_batches(tmp_path) -> None:
    pipe = Pipeline(ActionConfig(), bundle(tmp_path))
    first = [ex("curl", "p", 0), ex("chmod", "p", 1)]
    for ev in first:
        ev.pop("agent.id")
    pipe.score(first, "sensor-a", 1)
    run = ex("x", "p", 2, **{"process.executable": "/tmp/x"})
    run.pop("agent.id")
    other = dict(run)
    res_other = pipe.score([other], "sensor-b", 1)  # same ids, another sensor: no
    assert res_other.alerted == 0
    res = pipe.score([run], "sensor-a", 2)
    assert res.alerted == 1 and run["event.kind"] == "alert" and run["event.risk_score"] == 80


def test_bundle_tests_of_sequences_are_event_lists_and_leave_no_state(tmp_path) -> None:
    b = bundle(tmp_path, RULES + """
tests:
  - rule: drop_run
    match:
      - [{event.action: exec, process.name: curl, process.parent.entity_id: p},
         {event.action: exec, process.name: chmod, process.parent.entity_id: p},
         {event.action: exec, process.name: x, process.executable: /tmp/x, process.parent.entity_id: p}]
    no_match:
      - [{event.action: exec, process.name: curl, process.parent.entity_id: p},
         {event.action: exec, process.name: x, process.executable: /tmp/x, process.parent.entity_id: p}]
""")
    count, failures = run_tests(b)
    assert count == 2 and failures == []
    assert all(s.count == 0 for s in b.ruleset.sequences)


@pytest.mark.parametrize(("text", "message"), [
    ("sequence by a within 5s [x = 1]", "needs 'with runs=N'"),
    ("sequence by a [x = 1] [y = 2]", "needs 'within DURATION'"),
    ("sequence within 5s [x = 1] [y = 2]", "needs join fields"),
    ("sequence by a within 2h [x = 1] [y = 2]", "at most 3600s"),
    ("sequence by a within 5s [x = ] [y = 2]", "in step 1"),
    ("sequence by a within 5s [x = 1] with runs=1", "from 2 to"),
    ("sequence by a within 5s [x = 1] [y = 2] junk", "unexpected 'junk'"),
    ("sequence by a within 5s [x = 1] by b, c [y = 2]", "joins on 2 fields"),
    ("sequence by a within 5s [x = 1 [y = 2]", "unbalanced"),
])
def test_sequence_syntax_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_rule_condition(text)


def test_a_bad_sequence_is_reported_with_file_and_line(tmp_path) -> None:
    with pytest.raises(BundleError) as err:
        bundle(tmp_path, """
rules:
  - rule: broken
    condition: sequence by a within 5s [event.action = exec]
    score: 10
""")
    assert "r.yaml:3" in str(err.value) and "broken" in str(err.value)


def test_the_engine_skips_only_steps_their_sequence_would_ignore(tmp_path) -> None:
    """The engine (add_indicators) does not evaluate a step whose join values are missing,
    nor a later step of an idle ordered sequence; what fires is what the per-event matcher
    (every step evaluated and observed) fires, on the same stream."""
    import random

    rng = random.Random(5)
    names = ["curl", "chmod", "sh", "x", "ls"]
    stream = []
    for i in range(3000):
        ev = ex(rng.choice(names), f"p{rng.randrange(6)}", i // 40)
        if rng.random() < 0.2:
            ev["process.executable"] = "/tmp/x"
        if rng.random() < 0.15:
            del ev["process.parent.entity_id"]
        if rng.random() < 0.2:
            ev = {"event.action": "connect",
                  "process.entity_id": ev.get("process.parent.entity_id", ""),
                  "destination.port": rng.randrange(9), "@timestamp": ev["@timestamp"],
                  "agent.id": "s1"}
        stream.append(ev)
    rs = bundle(tmp_path).ruleset
    expected = fired(rs, stream)
    rs.reset_sequences()
    batch = [dict(ev, **{"threatseer.indicators": []}) for ev in stream]
    errors: list[Exception] = []
    rs.add_indicators(batch, errors.append)
    assert not errors
    got = [[i["rule"] for i in ev["threatseer.indicators"]] for ev in batch]
    assert got == expected
    assert sum(map(len, got)) > 20
