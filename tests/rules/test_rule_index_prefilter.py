"""The index's needle prefilter (regex/glob literals, or-branches over different fields, the
non-ASCII fallback) never hides a match: indexed matching equals brute force."""

from __future__ import annotations

import random
from pathlib import Path

from rules_helpers import DEFAULT_BUNDLE, write_bundle

from threatseer.hub.rules.bundle import load_bundle
from threatseer.hub.rules.query import parse
from threatseer.hub.rules.regex_literals import required_literals
from threatseer.hub.rules.ruleset import requirement


def test_required_literals() -> None:
    assert required_literals(r"history\s+-c|HISTFILE=/dev/null|unset\s+HISTFILE") == {
        "history", "histfile=/dev/null", "histfile"}
    assert required_literals(r"(curl|wget)\b[^|;]*\|\s*sh") == {"curl", "wget"}
    assert required_literals(r"\A(?:abc.*d)\Z") == {"abc"}
    assert required_literals(r"(?:abc)+xy") == {"abc"}
    assert required_literals(r"(?:abc)*x") is None  # optional part: only "x" is required
    assert required_literals(r"a|bcd") is None  # one branch too short to be worth it
    assert required_literals(r"-(W|R)\s?[0-9a-f]{2}") == {"-w", "-r"}  # small alternations
    assert required_literals(r"[Nn]c -[el]") == {"nc -e", "nc -l"}
    assert required_literals(r"[a-z]+\d") is None
    assert required_literals(r"caf\u00e9s") is None  # non-ASCII needle: never used
    assert required_literals("(unbalanced") is None


def test_requirement_spans_fields_and_regexes() -> None:
    req = requirement(parse(
        "event.action = exec and (process.executable endswith /ufw-init"
        " or process.command_line icontains 'ufw ')"))
    assert req == {("base", "process.executable", False): {"ufw-init"},
                   ("sub", "process.command_line", False): {"ufw "}}
    req = requirement(parse("process.command_line regex 'history\\s+-c|unset\\s+HISTFILE'"))
    assert req == {("sub", "process.command_line", False): {"history", "histfile"}}
    assert requirement(parse("file.path glob '/home/*/.ssh/id_*'")) == {
        ("sub", "file.path", False): {"/.ssh/id_"}}
    assert requirement(parse("a regex x or b contains yyy")) is None
    assert requirement(parse("not a contains xyz")) is None


RULES = """\
rules:
  - {rule: re_hist, condition: "process.command_line regex 'history\\\\s+-c|HISTSIZE=0'", score: 1}
  - {rule: ire_sudo, condition: "process.command_line iregex 'sudo\\\\s+-i'", score: 1}
  - {rule: icontains_kill, condition: "process.command_line icontains KILLALL", score: 1}
  - {rule: glob_key, condition: "file.path iglob '/home/*/.ssh/id_*'", score: 1}
  - {rule: either, condition: "process.executable endswith /nc or process.args contains '-e'",
     score: 1}
  - {rule: args_re, condition: "process.args regex '^--?exec='", score: 1}
"""
WORDS = ["history -c", "HISTSIZE=0", "sudo -i", "\u017fudo -i", "SUDO  -I", "killall",
         "KILLALL", "Kill\u0410ll", "/home/bob/.ssh/id_rsa", "/HOME/x/.SSH/ID_x", "-e",
         "--exec=x", "-exec=", "plain", "caf\u00e9", "\u212a", "", "/usr/bin/nc", "nc"]


def test_index_equals_brute_force_on_tricky_text(tmp_path: Path) -> None:
    rs = load_bundle(write_bundle(tmp_path / "b", {"rules/r.yaml": RULES})).ruleset
    rng = random.Random(3)
    hits = 0
    for _ in range(3000):
        ev = {"event.action": rng.choice(["exec", "open", None])}
        for f in ("process.command_line", "file.path", "process.executable"):
            if rng.random() < 0.8:
                ev[f] = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
        if rng.random() < 0.5:
            ev["process.args"] = rng.sample(WORDS, rng.randint(0, 4)) + [rng.randint(0, 9)]
        indexed = [r.name for r in rs.matching_rules(ev)]
        assert indexed == [r.name for r in rs.match_brute(ev)], ev
        hits += bool(indexed)
    assert hits > 500


def test_unicode_case_folding_is_not_hidden_by_the_prefilter(tmp_path: Path) -> None:
    rs = load_bundle(write_bundle(tmp_path / "b", {"rules/r.yaml": RULES})).ruleset
    plain = {"event.action": "exec", "process.command_line": "ls -l"}
    assert "ire_sudo" not in [r.name for r in rs.candidates(plain)]  # the prefilter is in use
    ev = {"event.action": "exec", "process.command_line": "\u017fudo -i"}  # long s
    assert [r.name for r in rs.matching_rules(ev)] == ["ire_sudo"]


def test_field_cache_and_shared_conditions_equal_brute_force(tmp_path: Path) -> None:
    """Lookups cached per field value, and rules sharing one condition (evaluated once), give
    what evaluating every rule gives, on a first pass and on a repeat served from the cache."""
    rules = RULES + """\
  - {rule: twin_a, condition: "process.command_line icontains KILLALL", score: 2}
  - {rule: num_eq, condition: "process.args = 1 or process.args contains true", score: 1}
"""
    rs = load_bundle(write_bundle(tmp_path / "b", {"rules/r.yaml": rules})).ruleset
    rng = random.Random(5)
    values = [*WORDS, 1, 1.0, True, "1", "true", "True"]
    events = []
    for _ in range(1500):
        ev = {"event.action": "exec",
              "process.command_line": " ".join(rng.sample(WORDS, 2)),
              "process.args": [rng.choice(values) for _ in range(rng.randint(0, 3))]}
        if rng.random() < 0.5:
            ev["process.args"] = rng.choice(values)
        events.append(ev)
    for _ in range(2):
        for ev in events:
            assert [r.name for r in rs.matching_rules(ev)] == [
                r.name for r in rs.match_brute(ev)], ev
    ev = {"event.action": "exec", "process.command_line": "killall -9 x"}
    assert [r.name for r in rs.matching_rules(ev)] == ["icontains_kill", "twin_a"]
    assert [r.name for r in rs.matching_rules({**ev, "process.args": True})] == [
        "icontains_kill", "twin_a", "num_eq"]


def test_match_dicts_equal_indicator_as_dict() -> None:
    """The dynamic engine's dicts (from a per-rule template) are the indicators' as_dict()
    (sequences keep state: each call starts from none)."""
    bundle = load_bundle(DEFAULT_BUNDLE)
    rs = bundle.ruleset
    hits = 0
    for t in bundle.tests:
        for _ in range(2):  # the second time from the template
            rs.reset_sequences()
            dicts = rs.match_dicts(t.event)
            rs.reset_sequences()
            assert dicts == [i.as_dict() for i in rs.match(t.event)]
        hits += len(dicts)
    assert hits > 50
    assert any("output" in d["extra_info"] for t in bundle.tests for d in rs.match_dicts(t.event))


def test_prefiltered_regexes_equal_the_plain_pattern() -> None:
    """A case-insensitive regex or glob without a fixed start is tried on the text only when
    one of its required literals occurs (compiler._pattern_search): the same answers as the pattern
    alone, on case variants and non-ASCII text (Unicode case folding) included."""
    import re

    from threatseer.hub.rules.query.compiler import _pattern_search

    cases = [("regex", (r"(falcon|osquery|auditd)[^\n]*(falcon|osquery)",), True),
             ("regex", (r"(curl|wget)\b[^|;]*\|\s*sh",), True),
             ("regex", (r"[Nn]c -[el]",), True),
             ("regex", (r"\s(sudo|su)\s+-i",), True),
             ("regex", (r"(ss|w)h", r"\bnc -e"), True),
             ("glob", ("*/.ssh/id_*",), True)]
    texts = [*WORDS, "ls /opt/FALCON /etc/osquery", "pgrep -f auditd osquery", "curl x | sh",
             "SSH", "wh", "\u017f\u017fh", "NC -E", "x\tnc -e",
             "wget -qO- y |  sh", "nc -e /bin/sh", "Nc -l", " \u017fudo -i", " SUDO  -I",
             "/home/a/.ssh/id_rsa", "/HOME/A/.SSH/ID_X", "fa\u0142con osquery", "x\nosquery"]
    for op, raw, nocase in cases:
        flags = re.IGNORECASE | re.DOTALL if nocase else re.DOTALL
        alts = "|".join(f"(?:{v})" for v in raw)
        plain = (re.compile("|".join(f"(?:{__import__('fnmatch').translate(v)})" for v in raw),
                            flags).match if op == "glob" else re.compile(alts, flags).search)
        search = _pattern_search(op, raw, nocase)
        assert search.__name__ == "prefiltered"  # case-insensitive, no fixed start
        for a in texts:
            for b in texts[::3]:
                text = f"{a} {b}"
                assert (search(text) is None) == (plain(text) is None), (raw, text)


def test_regexes_skip_only_texts_too_short_to_match(monkeypatch) -> None:
    """regex_search answers None without running the pattern on ASCII text shorter than its
    shortest match: every regex of the default bundle gives the answer of the same search
    without that shortcut on texts around that length, built from the pattern's own
    literals, and Python re finds no match in any text it skips."""
    import random
    import re

    from rules_helpers import DEFAULT_BUNDLE

    from threatseer.hub.rules.bundle import load_bundle
    from threatseer.hub.rules.query import compiler
    from threatseer.hub.rules.query.ast import And, Cmp, Not, Or
    from threatseer.hub.rules.query.compiler import _shortest_match, regex_search
    from threatseer.hub.rules.regex_literals import required_literals

    patterns: set[tuple[str, bool]] = set()

    def walk(node) -> None:
        if isinstance(node, Cmp) and node.op == "regex":
            patterns.update((str(v), node.nocase) for v in node.values)
        elif isinstance(node, And | Or):
            for item in node.items:
                walk(item)
        elif isinstance(node, Not):
            walk(node.item)

    for rule in load_bundle(DEFAULT_BUNDLE).ruleset.rules:  # its Sigma rules included
        walk(rule.condition)
    patterns |= {(r"(^|\.)[A-Za-z0-9]{32,63}\.", False), (r"\bnc\s+-e\b", True),
                 (r"(?<=abc)x{3}", False), (r"(a)\1{2}", False), (r"^$", False)}
    rng = random.Random(3)
    checked = skipped = 0
    for pattern, nocase in sorted(patterns):
        flags = re.IGNORECASE | re.DOTALL if nocase else re.DOTALL
        plain = re.compile(pattern, flags).search
        search = regex_search(pattern, nocase)
        shortest = _shortest_match(pattern, flags)
        with monkeypatch.context() as m:
            m.setattr(compiler, "_shortest_match", lambda *a: 0)
            unfiltered = regex_search(pattern, nocase)
        pieces = sorted(required_literals(pattern, flags) or ()) + ["a", "A0", ".", "/", " ", "\n"]
        for _ in range(60):
            text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
            text = text[:max(0, shortest + rng.randint(-3, 2))]
            for t in (text, text.upper(), "\u017f" + text):
                assert (search(t) is None) == (unfiltered(t) is None), (pattern, t)
                if len(t) < shortest:  # Python re agrees that it cannot match
                    assert plain(t) is None, (pattern, t)
                checked += 1
                skipped += len(t) < shortest and t.isascii()
    assert len(patterns) > 20 and checked > 3000 and skipped > 500
