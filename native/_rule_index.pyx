# cython: language_level=3, boundscheck=False, wraparound=False
"""The dynamic engine's hot loop, in C: per event, the candidate rules from the index and
the evaluation of their conditions (the index itself is built in Python:
``threatseer.hub.rules.ruleset``).

A bucket (the rules of one ``event.action``) has ``general_t``, the rule groups that require
no field, and ``field_list``: per indexed field ``(where, cache, index)``, where ``where`` is a
field name or a tuple of names tried in order, ``cache`` maps a field value (exact ``str`` or
``int``) to the groups it selects, and ``index.lookup(value)`` computes (and caches) them.

Why C: for each event this reads up to eight fields and does as many dict lookups; in Python
the interpreter's overhead was a third of the dynamic engine's time.
"""


cdef object _field_value(dict event, object where):
    if type(where) is str:
        return event.get(where)
    for name in <tuple?>where:
        v = event.get(name)
        if v is not None:
            return v
    return None


cpdef tuple candidates(object bucket, dict event):
    """The rule groups of ``bucket`` that can match ``event``, each once."""
    cdef tuple out = bucket.general_t
    cdef tuple entry, hit
    cdef int sources = 0
    for entry in <tuple?>bucket.field_list:
        value = _field_value(event, entry[0])
        if value is None:
            continue
        hit = None
        if type(value) is str or type(value) is int:
            hit = (<dict?>entry[1]).get(value)
        if hit is None:
            hit = entry[2].lookup(value)
        if hit:
            out = out + hit if out else hit
            sources += 1
    # A group filed under two fields may have been found twice.
    return tuple(dict.fromkeys(out)) if sources > 1 else out


def _order(rule):
    return rule.order


def add_indicators(dict buckets, object default, list events, object failed):
    """Extend each event's ``threatseer.indicators`` with the indicators of the rules it
    matches, in rule order. In its action's bucket (of ``buckets``), a group's ``residual``
    is tested (the index guarantees the action tests); other events are checked against
    ``default`` with the full ``predicate``. An event whose rules raise gets none of them
    and is passed to ``failed`` (one bad rule never stops the scoring)."""
    cdef dict ev
    cdef tuple groups
    cdef list hits
    cdef bint skip_default = not default.general_t and not default.field_list
    for ev in events:
        try:
            action = ev.get("event.action")
            bucket = buckets.get(action) if type(action) is str else None
            hits = []
            if bucket is not None:
                groups = candidates(bucket, ev)
                if not groups:
                    continue
                for g in groups:
                    if g.residual(ev):
                        hits.extend(g.rules)
            elif skip_default:
                continue
            else:
                for g in candidates(default, ev):
                    if g.predicate(ev):
                        hits.extend(g.rules)
            if not hits:
                continue
            if len(hits) > 1:
                hits.sort(key=_order)
            ev["threatseer.indicators"].extend([r.indicator_dict(ev) for r in hits])
        except Exception as exc:  # a rule bug: the engine counts it, scoring goes on
            failed(exc)
