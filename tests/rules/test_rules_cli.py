"""`threatseer rules validate|test|build|sign|verify` and `threatseer keys gen`, as subprocesses."""

from __future__ import annotations

import io
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from rules_helpers import DEFAULT_BUNDLE, SIMPLE_RULES, write_bundle


def run(cmd: list[str], *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_default_bundle_tests_pass(threatseer_cmd: list[str]) -> None:
    r = run(threatseer_cmd, "rules", "test", DEFAULT_BUNDLE)
    assert r.returncode == 0, r.stderr
    passed, total = r.stdout.split()[0].split("/")
    assert passed == total and int(total) >= 100


def test_validate_reports_file_line_and_exits_1(threatseer_cmd, tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", {
        "rules/a.yaml": "rules:\n  - rule: bad\n    condition: process.name in\n"})
    r = run(threatseer_cmd, "rules", "validate", root)
    assert r.returncode == 1
    assert f"{root}/rules/a.yaml:2: rule 'bad': condition:" in r.stderr
    ok = run(threatseer_cmd, "rules", "validate", write_bundle(tmp_path / "c", {
        "rules/a.yaml": SIMPLE_RULES}))
    assert ok.returncode == 0 and "1 rules" in ok.stdout


def test_test_command_fails_on_a_failing_test(threatseer_cmd, tmp_path: Path) -> None:
    text = SIMPLE_RULES.replace("process.parent.name: sshd}", "process.parent.name: nginx}")
    r = run(threatseer_cmd, "rules", "test", write_bundle(tmp_path / "b", {"rules/a.yaml": text}))
    assert r.returncode == 1
    assert "FAIL" in r.stderr and "matched but must not" in r.stderr
    assert "1/2 tests passed" in r.stdout


def test_build_is_deterministic_and_signing_detects_tampering(threatseer_cmd,
                                                              tmp_path: Path) -> None:
    src = write_bundle(tmp_path / "b", {"rules/a.yaml": SIMPLE_RULES})
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert run(threatseer_cmd, "rules", "build", src, "-o", a).returncode == 0
    (src / "rules" / "a.yaml").touch()  # mtimes must not matter
    assert run(threatseer_cmd, "rules", "build", src, "-o", b).returncode == 0
    assert a.read_bytes() == b.read_bytes()

    key = tmp_path / "signing.key"
    r = run(threatseer_cmd, "keys", "gen", "--type", "signing", "-o", key)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{key}.pub").stat().st_mode) == 0o644
    assert run(threatseer_cmd, "keys", "gen", "--type", "signing", "-o", key).returncode == 1

    unsigned = run(threatseer_cmd, "rules", "verify", a, "-k", f"{key}.pub")
    assert unsigned.returncode == 1 and "not signed" in unsigned.stderr
    assert run(threatseer_cmd, "rules", "sign", a, "-k", key).returncode == 0
    good = run(threatseer_cmd, "rules", "verify", a, "-k", f"{key}.pub")
    assert good.returncode == 0 and "good signature" in good.stdout
    # signing twice gives the same bytes (deterministic signature and archive)
    again = tmp_path / "again.tar.gz"
    assert run(threatseer_cmd, "rules", "sign", a, "-k", key, "-o", again).returncode == 0
    assert again.read_bytes() == a.read_bytes()

    other = tmp_path / "other.key"
    run(threatseer_cmd, "keys", "gen", "--type", "signing", "-o", other)
    untrusted = run(threatseer_cmd, "rules", "verify", a, "-k", f"{other}.pub")
    assert untrusted.returncode == 1 and "untrusted key" in untrusted.stderr

    tampered = tmp_path / "tampered.tar.gz"
    tampered.write_bytes(_tamper(a.read_bytes()))
    bad = run(threatseer_cmd, "rules", "verify", tampered, "-k", f"{key}.pub")
    assert bad.returncode == 1 and "tampered" in bad.stderr


def _tamper(archive: bytes) -> bytes:
    """Rewrite one rule's score inside a signed archive, keeping the signature member."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as src, \
            tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read()
            if member.name == "rules/a.yaml":
                data = data.replace(b"score: 70", b"score: 1")
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out.getvalue()


def test_built_archive_loads_like_the_directory(threatseer_cmd, tmp_path: Path) -> None:
    out = tmp_path / "default.tar.gz"
    r = run(threatseer_cmd, "rules", "build", DEFAULT_BUNDLE, "-o", out)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "sigma/LICENSE" in names and "manifest.yaml" in names
    v = run(threatseer_cmd, "rules", "validate", out)
    assert v.returncode == 0, v.stderr
    d = run(threatseer_cmd, "rules", "validate", DEFAULT_BUNDLE)
    assert v.stdout.split("digest")[-1] == d.stdout.split("digest")[-1]


def test_build_refuses_a_bundle_whose_tests_fail(threatseer_cmd, tmp_path: Path) -> None:
    text = SIMPLE_RULES.replace("process.parent.name: sshd}", "process.parent.name: nginx}")
    src = write_bundle(tmp_path / "b", {"rules/a.yaml": text})
    r = run(threatseer_cmd, "rules", "build", src, "-o", tmp_path / "x.tar.gz")
    assert r.returncode == 1 and not (tmp_path / "x.tar.gz").exists()


@pytest.mark.parametrize("key_type", ["signing", "admin"])
def test_keys_gen_types(threatseer_cmd, tmp_path: Path, key_type: str) -> None:
    key = tmp_path / key_type
    r = run(threatseer_cmd, "keys", "gen", "--type", key_type, "-o", key)
    assert r.returncode == 0 and key.exists() and Path(f"{key}.pub").exists()
    assert len(key.read_text().strip()) == 44
