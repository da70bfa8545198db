"""The one schema check of events entering the hub, from sensors (ingest) or files (replay):
each event must be a map with a string ``event.action`` and every field the schema requires
for that action (:data:`threatseer.common.ecs.REQUIRED`). The loop is in C
(``_batch.refused``); this module holds the tables it checks against.
"""

from __future__ import annotations

from typing import Any

from threatseer.common import ecs
from threatseer.hub._batch import refused

# ecs.REQUIRED as name tuples, COMMON first, each name once.
_COMMON_NAMES = tuple(dict.fromkeys(ecs.COMMON))
_REQUIRED_NAMES = {action: tuple(dict.fromkeys((*ecs.COMMON, *fields)))
                   for action, fields in ecs.REQUIRED.items()}


def problems(events: list[Any]) -> list[tuple[int, str]]:
    """``(position, what is wrong)`` for every event the hub refuses; empty when all pass."""
    return refused(events, _REQUIRED_NAMES, _COMMON_NAMES)
