"""Every benchmark in bench/, one after another (``make bench``; root, like the benches).

Each benchmark prints its own side-by-side comparison and ends with one ``key=value`` line;
this runs them in turn with the same interpreter, shows their output as it comes, and ends
with a table of those last lines, so one run of ``make bench`` gives every figure the closing
notes quote. ``--only hub,sensor`` picks some; a benchmark that fails is reported and the
others still run (exit status 1 then).

    .venv/bin/python bench/run_all.py [--only NAMES] [--list]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks() -> dict[str, Path]:
    """name -> script: every ``bench/<name>_bench.py``."""
    return {p.name.removesuffix("_bench.py"): p for p in sorted(HERE.glob("*_bench.py"))}


def last_key_values(output: str) -> str:
    """The last line of ``output`` made of key=value pairs, or ''."""
    for line in reversed(output.splitlines()):
        words = line.split()
        if words and all("=" in w for w in words):
            return line.strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated names (see --list)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    found = benchmarks()
    if args.list:
        print("\n".join(found))
        return 0
    names = [n for n in args.only.split(",") if n] or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        print(f"run_all: unknown benchmark(s): {', '.join(unknown)} (have: {', '.join(found)})",
              file=sys.stderr)
        return 2
    results: list[tuple[str, int, float, str]] = []
    for name in names:
        print(f"==> {name}: {found[name].name}", flush=True)
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(found[name])], stdout=subprocess.PIPE,
                                text=True)
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            lines.append(line)
        rc = proc.wait()
        results.append((name, rc, time.monotonic() - start, last_key_values("".join(lines))))
    print("\n==> summary")
    for name, rc, took, kv in results:
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"{name:<10} {status:<16} {took:6.0f} s  {kv}")
    return 0 if all(rc == 0 for _, rc, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
