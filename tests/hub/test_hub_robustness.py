"""A rule that raises, or produces an indicator that cannot be encoded, costs only that event:
the hub keeps running and delivers the rest of the batch."""

from __future__ import annotations

from typing import Any

from hub_helpers import Sender, Subscriber, exec_event, wait_connected

from threatseer.hub.indicators import Indicator
from threatseer.hub.rules.model import Bundle, Manifest


class NastyRuleSet:
    def match(self, event: dict[str, Any]) -> list[Indicator]:
        args = event.get("process.args") or []
        if "boom" in args:
            raise RuntimeError("rule bug")
        if "cycle" in args:
            loop: dict[str, Any] = {}
            loop["self"] = loop
            return [Indicator("dynamic", "cyclic", "query", "unencodable", 1, (), loop)]
        return []

    def __len__(self) -> int:
        return 1


def test_rule_bugs_cost_only_their_event(start_hub, zctx) -> None:
    hub = start_hub(bundle_obj=Bundle(Manifest("nasty", "1"), ruleset=NastyRuleSet()))
    sub = Subscriber(zctx, hub.publisher.endpoint)
    sender = Sender(zctx, hub.ingest.endpoint, "s")
    wait_connected(sender, sub)
    sender.send([exec_event(args=["x", "ok1"]), exec_event(args=["x", "boom"]),
                 exec_event(args=["x", "cycle"]), exec_event(args=["x", "ok2"])])
    sender.send([exec_event(args=["x", "after"])])
    got = [ev["process.args"][1] for _t, ev in sub.collect(4)]
    assert got == ["ok1", "boom", "ok2", "after"]
    assert sub.drain() == []
    assert hub.pipeline.rules.dynamic.errors == 1
    assert hub.publisher.unpackable == 1
    assert hub._thread.is_alive() and hub.failures == 0
