"""Rule bundle costs: compile time of the default bundle and per-event evaluation cost.

Events are a mix shaped like a busy host (mostly benign execs, opens and connects, plus the
bundle's own test events), scored with the index and, for comparison, by brute force over
every rule. Prints figures; the last line is ``key=value ...``.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from threatseer.hub.rules.bundle import complete_event, load_bundle

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "rules" / "default"


def benign_events(n: int, rng: random.Random) -> list[dict]:
    cmds = ["ls -la", "cat /etc/os-release", "grep -r foo .", "python3 -m pytest -q",
            "git status", "apt-get update", "systemctl status nginx", "ps aux", "sleep 1",
            "/usr/lib/postgresql/15/bin/postgres -D /var/lib/pg", "sh -c run-parts /etc/cron.daily"]
    paths = ["/etc/ld.so.cache", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/passwd",
             "/var/log/syslog", "/tmp/tmp1234", "/home/alice/.bashrc", "/proc/self/stat"]
    out = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.45:
            cmd = rng.choice(cmds)
            exe = cmd.split()[0]
            exe = exe if exe.startswith("/") else f"/usr/bin/{exe}"
            ev = {"event.action": "exec", "process.name": exe.rsplit("/", 1)[1][:15],
                  "process.executable": exe, "process.args": cmd.split(),
                  "process.command_line": cmd, "process.parent.name": "bash",
                  "threatseer.ancestors": ["bash", "sshd", "systemd"], "user.name": "alice",
                  "process.pid": 1000 + i}
        elif kind < 0.85:
            ev = {"event.action": "open", "file.path": rng.choice(paths),
                  "threatseer.open.flags": rng.choice([["read"], ["write", "create"]]),
                  "process.name": rng.choice(["python3", "bash", "rsyslogd", "nginx"]),
                  "process.executable": "/usr/bin/python3", "threatseer.ancestors": ["bash"]}
        else:
            ev = {"event.action": "connect", "destination.ip": rng.choice(
                ["10.0.0.5", "151.101.1.1", "127.0.0.1"]), "destination.port": rng.choice(
                [443, 80, 5432, 4444]), "process.name": rng.choice(["curl", "python3", "nginx"]),
                "process.executable": "/usr/bin/curl", "network.direction": "egress"}
        out.append(complete_event(ev))
    return out


def main() -> None:
    t0 = time.perf_counter()
    bundle = load_bundle(BUNDLE)
    compile_s = time.perf_counter() - t0
    rs = bundle.ruleset
    rng = random.Random(1)
    events = benign_events(20000, rng) + [t.event for t in bundle.tests] * 10
    rng.shuffle(events)

    def timed(fn) -> tuple[float, int]:  # type: ignore[no-untyped-def]
        best, hits = float("inf"), 0
        for _ in range(3):
            start = time.perf_counter()
            hits = sum(len(fn(e)) for e in events)
            best = min(best, time.perf_counter() - start)
        return best, hits

    indexed_s, hits = timed(rs.match)
    brute_s, brute_hits = timed(rs.match_brute)
    n = len(events)
    us_indexed = indexed_s / n * 1e6
    us_brute = brute_s / n * 1e6
    candidates = sum(len(rs.candidates(e)) for e in events) / n
    print(f"bundle {bundle.manifest.name} {bundle.manifest.version}: {len(rs)} rules "
          f"({len(bundle.unsupported)} unsupported), compiled in {compile_s * 1000:.0f} ms")
    print(f"{n} events: indexed {us_indexed:.1f} us/event ({n / indexed_s:,.0f} events/s), "
          f"brute force {us_brute:.1f} us/event; {candidates:.1f} candidate rules/event; "
          f"{hits} indicators (brute force {brute_hits})")
    print(f"compile_ms={compile_s * 1000:.0f} rules={len(rs)} us_per_event={us_indexed:.2f} "
          f"events_per_s={n / indexed_s:.0f} brute_us_per_event={us_brute:.2f} "
          f"index_speedup={us_brute / us_indexed:.1f} candidates_per_event={candidates:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
