"""Detection efficacy: how much of an attack corpus alerts, how much benign work does not.

Runs every attack behaviour and every benign workload of tests/detection/corpus/ for real
(each in a loopback-only network namespace with overlaid system directories and a cgroup of
its own, see tests/detection/sandbox.py) against ONE real sensor and hub with the bundle
under test, and counts, from the scored events of each run:

- attacks: a behaviour is *alerted* when at least one of its events is an alert; it *hit* its
  expected rule when an alert carries one of the rules it names;
- benign: alerts per 10,000 events (every event the sensor reported for the workloads).

``--save DIR`` keeps each run's scored events (JSON lines); ``--rescore DIR`` scores saved
events again offline through the hub's pipeline with another bundle (no kernel needed: for
iterating on rules; sequences see the events in the sensor's order).

``--benign-rounds N`` runs the benign corpus N times (more events, and an alert that happens
only sometimes has more chances to show).

Run as root:  .venv/bin/python bench/detection_bench.py [--only ID ...] [--bundle DIR]
Last line:    attack_alerted_pct=... benign_alerts_per_10k=... (key=value)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "detection"))

import corpus  # noqa: E402  (tests/detection: the corpora and their harness)

HUB_FIELDS = ("threatseer.indicators", "event.risk_score", "threatseer.action",
              "threatseer.batch.seq")


def run_live(args: argparse.Namespace, attacks: list, benign: list) -> dict[str, list[dict]]:
    from harness import DetectionPipeline, pipeline_workdir

    if os.geteuid() != 0:
        raise SystemExit("run as root: the sensor loads BPF programs, the sandbox needs "
                         "namespaces and cgroups")
    results: dict[str, list[dict]] = {}
    started = time.monotonic()
    pipe = DetectionPipeline(pipeline_workdir(), bundle=Path(args.bundle))
    print(f"hub and sensor up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    try:
        runs = [(item, "") for item in attacks] + [
            (item, f"#{r}" if r else "") for r in range(args.benign_rounds) for item in benign]
        for item, round_tag in runs:
            t0 = time.monotonic()
            outcome = pipe.run(item.script, item.infra, item.timeout)
            results.setdefault(item.id, []).extend(outcome.events)
            if args.verbose:
                print(f"{item.id}: {time.monotonic() - t0:.2f} s, {len(outcome.events)} events,"
                      f" {len(outcome.alerts)} alerts, rc={outcome.run.returncode}",
                      file=sys.stderr)
                if outcome.run.returncode and args.verbose > 1:
                    print("   " + outcome.run.output.strip()[-600:].replace("\n", "\n   "),
                          file=sys.stderr)
            if args.save:
                save(Path(args.save), item.id + round_tag, outcome.events)
    finally:
        pipe.close()
    return results


def save(directory: Path, name: str, events: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{name}.jsonl", "w") as f:
        for ev in events:
            f.write(json.dumps(ev, default=str) + "\n")


def rescore(args: argparse.Namespace, ids: list[str]) -> dict[str, list[dict]]:
    """Score saved events again, offline, through the hub's pipeline and ``--bundle``."""
    from threatseer.hub.config import ActionConfig
    from threatseer.hub.rules.bundle import load_bundle
    from threatseer.hub.scoring import Pipeline

    pipeline = Pipeline(ActionConfig(), load_bundle(args.bundle))
    out: dict[str, list[dict]] = {}
    for name in ids:
        path = Path(args.rescore) / f"{name}.jsonl"
        if not path.exists():
            continue
        events = [json.loads(line) for line in path.read_text().splitlines() if line]
        events.sort(key=lambda e: e.get("event.sequence", 0))
        for ev in events:
            for key in HUB_FIELDS:
                ev.pop(key, None)
            ev["event.kind"] = "event"
        pipeline.score(events, "rescore", 0, time.time())
        out[name] = events
    return out


def is_alert(ev: dict[str, Any]) -> bool:
    return ev.get("event.kind") == "alert"


def report(attacks: list, benign: list, results: dict[str, list[dict]], verbose: int) -> None:
    by_tactic: dict[str, list[tuple[Any, bool, bool]]] = defaultdict(list)
    misses = []
    for b in attacks:
        events = results.get(b.id)
        if events is None:
            continue
        alerts = [e for e in events if is_alert(e)]
        rules = {i["rule"] for e in alerts for i in e.get("threatseer.indicators", ())}
        hit = bool(rules & set(b.expect))
        by_tactic[b.tactic].append((b, bool(alerts), hit))
        if not alerts or not hit:
            best = max(events, key=lambda e: e.get("event.risk_score", 0), default={})
            misses.append((b, bool(alerts), sorted(rules), best))
    total = sum(len(v) for v in by_tactic.values())
    alerted = sum(a for v in by_tactic.values() for _, a, _ in v)
    hits = sum(h for v in by_tactic.values() for _, _, h in v)
    if total:
        print(f"{'tactic':<22} {'behaviours':>10} {'alerted':>8} {'expected rule':>14}")
        for tactic in corpus.TACTICS:
            rows = by_tactic.get(tactic, [])
            if rows:
                print(f"{tactic:<22} {len(rows):>10} {sum(a for _, a, _ in rows):>8} "
                      f"{sum(h for _, _, h in rows):>14}")
        print(f"{'all':<22} {total:>10} {alerted:>8} {hits:>14}")
        for b, was_alerted, rules, best in misses:
            what = "alerted, other rules" if was_alerted else (
                "known gap" if b.gap else "NOT alerted")
            inds = ", ".join(f"{i['rule']}={i['score']}"
                             for i in best.get("threatseer.indicators", ()))
            print(f"  {what}: {b.id} (expects {', '.join(b.expect)})"
                  + (f" got {rules}" if was_alerted and verbose else "")
                  + (f"; best [{best.get('event.risk_score')}] {inds}"
                     if not was_alerted and verbose else ""))
    bench_events = bench_alerts = 0
    noisy: Counter[str] = Counter()
    rows = []
    for w in benign:
        events = results.get(w.id)
        if events is None:
            continue
        alerts = [e for e in events if is_alert(e)]
        bench_events += len(events)
        bench_alerts += len(alerts)
        rows.append((w.id, len(events), len(alerts)))
        for e in alerts:
            top = max(e.get("threatseer.indicators", ()), key=lambda i: i["score"],
                      default={"rule": "?"})
            noisy[top["rule"]] += 1
            if verbose:
                print(f"  benign alert in {w.id}: [{e.get('event.risk_score')}] "
                      f"{e.get('event.action')} {e.get('process.name')}: "
                      f"{str(e.get('process.command_line') or e.get('file.path'))[:140]} <- "
                      + ", ".join(f"{i['rule']}={i['score']}"
                                  for i in e.get("threatseer.indicators", ())))
    if rows:
        print(f"\n{'benign workload':<28} {'events':>8} {'alerts':>7}")
        for name, n, a in rows:
            print(f"{name:<28} {n:>8} {a:>7}")
        print(f"{'all':<28} {bench_events:>8} {bench_alerts:>7}")
        if noisy:
            print("benign alerts by top rule: " + ", ".join(f"{r} {n}"
                                                         for r, n in noisy.most_common()))
    pct = 100.0 * alerted / total if total else float("nan")
    per10k = 10_000.0 * bench_alerts / bench_events if bench_events else float("nan")
    print(f"attack_alerted_pct={pct:.1f} benign_alerts_per_10k={per10k:.2f} "
          f"attacks={total} attacks_expected_rule={hits} benign_events={bench_events} "
          f"benign_alerts={bench_alerts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "rules" / "default"))
    parser.add_argument("--only", nargs="*", help="ids (or prefixes) of runs to do")
    parser.add_argument("--attacks-only", action="store_true")
    parser.add_argument("--benign-only", action="store_true")
    parser.add_argument("--save", help="directory to keep each run's scored events in")
    parser.add_argument("--rescore", help="score the events saved in this directory again")
    parser.add_argument("--benign-rounds", type=int, default=1, metavar="N",
                        help="run the benign corpus N times")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args()
    attacks = [] if args.benign_only else corpus.attacks()
    benign = [] if args.attacks_only else corpus.benign()
    if args.only:
        attacks = [b for b in attacks if any(b.id.startswith(p) for p in args.only)]
        benign = [w for w in benign if any(w.id.startswith(p) for p in args.only)]
    if args.rescore:
        results = rescore(args, [x.id for x in [*attacks, *benign]])
    else:
        results = run_live(args, attacks, benign)
    report(attacks, benign, results, args.verbose)


if __name__ == "__main__":
    main()
