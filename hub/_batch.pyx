# cython: language_level=3, boundscheck=False, wraparound=False
"""The hub's per-event bookkeeping around the engines, in C: the schema check after decoding
(``threatseer.hub.ingest``), the fields every scored event gets and the score/action stage
(``threatseer.hub.scoring``), and the grouping of emitted events by PUB topic
(``threatseer.hub.publish``). The rules each loop applies are documented there.

Why C: each loop does a few dict reads and writes per event, and in Python the interpreter's
overhead of the loop itself was most of the cost.
"""


def refused(list events, dict required, tuple common):
    """``(position, problem)`` of each of the ``events`` that is not a map whose
    ``event.action`` is a string and which carries every field ``required[action]`` (a tuple
    of names; ``common`` for other actions) names; empty when all are good."""
    cdef list out = []
    cdef list missing
    cdef Py_ssize_t i = -1
    cdef tuple need
    for ev in events:
        i += 1
        if type(ev) is not dict:
            out.append((i, "event is not a map"))
            continue
        action = (<dict>ev).get("event.action")
        if type(action) is not str:
            out.append((i, "event.action is missing or not a string"))
            continue
        need = required.get(action, common)
        missing = None
        for name in need:
            if name not in <dict>ev:
                if missing is None:
                    missing = []
                missing.append(name)
        if missing is not None:
            out.append((i, "missing " + ", ".join(missing)))
    return out


def prepare(list events, str sensor_id, object seq):
    """Give each event an empty indicator list, its sensor id and its batch number."""
    cdef dict ev
    for ev in events:
        ev["threatseer.indicators"] = []
        ev["agent.id"] = sensor_id
        ev["threatseer.batch.seq"] = seq


def tally(list events, object toss_below, object alert_at, str log, str alert,
          list emitted, str keep=None, str keep_field=None):
    """Sum each event's indicator scores into ``event.risk_score``; append the events scoring
    at least ``toss_below`` (and, whatever their score, those whose ``event.action`` is
    ``keep`` or that carry ``keep_field``) to ``emitted``, with ``threatseer.action``
    ``alert`` (and ``event.kind: alert``) from ``alert_at`` on, else ``log``. Returns
    (tossed, alerted)."""
    cdef dict ev
    cdef Py_ssize_t tossed = 0, alerted = 0
    for ev in events:
        score = 0
        for ind in <list?>ev["threatseer.indicators"]:
            score += ind["score"]
        ev["event.risk_score"] = score
        if score < toss_below and (keep is None or ev.get("event.action") != keep) and (
                keep_field is None or keep_field not in ev):
            tossed += 1
            continue
        if score >= alert_at:
            ev["event.kind"] = alert
            ev["threatseer.action"] = alert
            alerted += 1
        else:
            ev["threatseer.action"] = log
        emitted.append(ev)
    return tossed, alerted


def group_by_topic(list events, dict topics, object topic_of):
    """``{topic: [events]}`` in event order; ``topics`` caches each (kind, first category,
    action)'s topic, made by ``topic_of(event)``."""
    cdef dict ev, groups = {}
    cdef list group
    for ev in events:
        cats = ev["event.category"]
        key = (ev["event.kind"], (<list>cats)[0] if type(cats) is list and cats else str(cats),
               ev["event.action"])
        topic = topics.get(key)
        if topic is None:
            topic = topics[key] = topic_of(ev)
        group = groups.get(topic)
        if group is None:
            groups[topic] = [ev]
        else:
            group.append(ev)
    return groups
