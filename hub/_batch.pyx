# cython: language_level=3, boundscheck=False, wraparound=False
"""The hub's per-event bookkeeping around the engines, in C: the schema check after decoding
(``threatseer.hub.ingest``), the fields every scored event gets and the score/action stage
(``threatseer.hub.scoring``), and the grouping of emitted events by PUB topic
(``threatseer.hub.publish``). The rules each loop applies are documented there.

Why C: each loop does a few dict reads and writes per event, and in Python the interpreter's
overhead of the loop itself was most of the cost.
"""


from cpython.dict cimport PyDict_GetItemWithError, PyDict_Next, PyDict_SetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.math cimport isfinite
from libc.stdint cimport uint64_t


cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object) except? -1

# Field type codes (hub/validate.py builds the name -> code table from common/ecs.py and
# keeps the same numbers). A table entry is ``code | (bit + 1) << 8`` for the fields some
# action requires, ``bit`` being the field's place in the required-field masks.
cdef enum:
    T_KEYWORD = 1   # str, or an int (ECS lets numbers arrive for keyword fields)
    T_LONG = 2      # int in [-2**63, 2**63)
    T_ULONG = 3     # int in [0, 2**64)
    T_FLOAT = 4     # int or finite float
    T_BOOL = 5      # bool
    T_DATE = 6      # str, or an int (epoch milliseconds)
    T_IP = 7        # str
    T_HUB = 8       # set by the hub after the check: any value (it is overwritten)
    T_DROP = 9      # only the hub writes it: removed from what a sensor sends
    T_ARRAY = 16    # flag: a list of the type
    CACHE_SLOTS = 1024

# Field name -> (code, required bit) by the name's address: the decoder gives every event the
# same key objects (msgspec caches them), so a pointer compare replaces a dict lookup (most of
# this check's cost). Each cached name is referenced, so its address is never reused while
# it is here; the cache belongs to one table (``_cache_types``) and is emptied for another.
cdef PyObject *_cache_key[CACHE_SLOTS]
cdef int _cache_code[CACHE_SLOTS]
cdef uint64_t _cache_bit[CACHE_SLOTS]
cdef object _cache_types = None


cdef void _cache_clear() noexcept:
    cdef int i
    for i in range(CACHE_SLOTS):
        Py_XDECREF(_cache_key[i])
        _cache_key[i] = NULL


cdef int _lookup(PyObject *k, dict types, object resolve, uint64_t *bit) except -1:
    """The type code of field ``k`` (0: unknown to the schema) and its required bit."""
    cdef size_t slot = (<size_t>k >> 4) & (CACHE_SLOTS - 1)
    cdef PyObject *found
    cdef long entry
    if _cache_key[slot] == k:
        bit[0] = _cache_bit[slot]
        return _cache_code[slot]
    found = PyDict_GetItemWithError(types, <object>k)
    if found is NULL:
        entry = resolve(<object>k)
    else:
        entry = <long><object>found
    Py_XDECREF(_cache_key[slot])
    Py_INCREF(<object>k)
    _cache_key[slot] = k
    _cache_code[slot] = entry & 0xff
    _cache_bit[slot] = (<uint64_t>1 << ((entry >> 8) - 1)) if entry >> 8 else 0
    bit[0] = _cache_bit[slot]
    return _cache_code[slot]


cdef str _WHAT_INT = "an integer", _WHAT_NUM = "a number", _WHAT_BOOL = "a boolean"
cdef str _WHAT_STR = "a string", _WHAT_KW = "a string or an integer"


cdef inline int _scalar(object v, int code, Py_ssize_t max_chars) except -1:
    """0: ``v`` fits ``code``; 1: it does not; 2: a string longer than ``max_chars``."""
    cdef int overflow = 0
    cdef long long x
    t = type(v)
    if t is str:
        if code == T_KEYWORD or code == T_DATE or code == T_IP:
            return 2 if len(<str>v) > max_chars else 0
        return 1
    if t is int:
        if code == T_KEYWORD or code == T_FLOAT or code == T_DATE:
            return 0
        if code == T_LONG:
            PyLong_AsLongLongAndOverflow(v, &overflow)
            return 1 if overflow else 0
        if code == T_ULONG:
            x = PyLong_AsLongLongAndOverflow(v, &overflow)
            if overflow > 0:
                try:
                    PyLong_AsUnsignedLongLong(v)
                except OverflowError:
                    return 1
                return 0
            return 1 if overflow < 0 or x < 0 else 0
        return 1
    if t is float:
        return 0 if code == T_FLOAT and isfinite(<double>v) else 1
    if t is bool:
        return 0 if code == T_BOOL else 1
    return 1


cdef str _expected(int code):
    code &= ~T_ARRAY
    if code == T_LONG or code == T_ULONG:
        return _WHAT_INT
    if code == T_FLOAT:
        return _WHAT_NUM
    if code == T_BOOL:
        return _WHAT_BOOL
    if code == T_IP:
        return _WHAT_STR
    return _WHAT_KW


cdef str _kind(object v, int code):
    if type(v) is bool:
        return "a boolean"
    if type(v) is int:
        code &= ~T_ARRAY
        return "an out-of-range integer" if code == T_LONG or code == T_ULONG \
            else "an integer"
    if type(v) is float:
        return "a number" if isfinite(<double>v) else "a non-finite number"
    if type(v) is str:
        return "a string"
    if type(v) is dict:
        return "a map"
    if type(v) is list:
        return "a list"
    return "a " + type(v).__name__


def refused(list events, dict required, object common, tuple names, dict types,
            object resolve, Py_ssize_t max_chars, Py_ssize_t max_items, list unknown,
            list cut):
    """``(position, problem)`` of each of the ``events`` that is not a map whose
    ``event.action`` is a string, which carries every field its action requires
    (``required[action]``, else ``common``: a mask of the bits of ``names``), and whose every
    field has a value of its schema type (``types``: name -> entry, see above;
    ``resolve(name)`` for the names not in it, 0 for a name the schema does not know); empty
    when all are good.

    In the events that pass: a string longer than ``max_chars`` or a list longer than
    ``max_items`` is cut there and its name added to ``threatseer.truncated_fields`` (and to
    ``cut``); a field the schema does not know is removed and its name added to ``unknown``,
    one only the hub writes is removed. ``None`` is a missing value, allowed anywhere."""
    global _cache_types
    cdef list out = []
    cdef list drop, trunc, items
    cdef Py_ssize_t i = -1, pos, j, n, b
    cdef PyObject *k
    cdef PyObject *v
    cdef int code, res, base
    cdef uint64_t need, seen, bit = 0
    cdef str problem
    if types is not _cache_types:
        _cache_clear()
        _cache_types = types
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
        seen = 0
        drop = trunc = None
        problem = None
        pos = 0
        while PyDict_Next(ev, &pos, &k, &v):
            if type(<object>k) is not str:
                problem = "a field name that is not a string"
                break
            code = _lookup(k, types, resolve, &bit)
            seen |= bit
            value = <object>v
            if value is None:
                continue
            if code == 0 or code == T_DROP:
                if drop is None:
                    drop = []
                drop.append(<object>k)
                continue
            if code == T_HUB:
                continue
            if code & T_ARRAY:
                if type(value) is not list:
                    problem = f"{<object>k}: expected a list, got {_kind(value, 0)}"
                    break
                base = code & ~T_ARRAY
                n = len(<list>value)
                items = None
                for j in range(n):
                    item = (<list>value)[j]
                    res = _scalar(item, base, max_chars)
                    if res == 1:
                        problem = (f"{<object>k}[{j}]: expected {_expected(code)}, "
                                   f"got {_kind(item, code)}")
                        break
                    if res == 2:
                        if items is None:
                            items = list(<list>value)
                        items[j] = (<str>item)[:max_chars]
                if problem is not None:
                    break
                if n > max_items:
                    if items is None:
                        items = list(<list>value)
                    del items[max_items:]
                if items is not None:
                    PyDict_SetItem(ev, <object>k, items)  # same key: safe while iterating
                    if trunc is None:
                        trunc = []
                    trunc.append(<object>k)
                continue
            res = _scalar(value, code, max_chars)
            if res == 0:
                continue
            if res == 2:
                PyDict_SetItem(ev, <object>k, (<str>value)[:max_chars])
                if trunc is None:
                    trunc = []
                trunc.append(<object>k)
                continue
            problem = f"{<object>k}: expected {_expected(code)}, got {_kind(value, code)}"
            break
        if problem is None and need & ~seen:
            problem = "missing " + ", ".join([names[b] for b in range(len(names))
                                               if need & ~seen & (<uint64_t>1 << b)])
        if problem is not None:
            out.append((i, problem))
            continue
        if drop is not None:
            for name in drop:
                del (<dict>ev)[name]
                if _lookup(<PyObject *>name, types, resolve, &bit) == 0:
                    unknown.append(name)
        if trunc is not None:
            before = (<dict>ev).get("threatseer.truncated_fields")
            (<dict>ev)["threatseer.truncated_fields"] = \
                (before + trunc) if type(before) is list else trunc
            cut.extend(trunc)
    return out


def prepare(list events, str sensor_id, object seq):
    """Give each event an empty indicator list, the sensor id the hub authenticated, its
    batch number, and an ``event.id`` in that sensor's namespace: ``<sensor id>:`` in front
    unless it is there already (a sensor id has no ``:``, so one sensor cannot make an id
    another sensor's events have; the Elasticsearch output uses it as the document id)."""
    cdef dict ev
    cdef str prefix = sensor_id + ":"
    for ev in events:
        ev["threatseer.indicators"] = []
        ev["agent.id"] = sensor_id
        ev["threatseer.batch.seq"] = seq
        eid = ev.get("event.id")
        if type(eid) is str:
            if not (<str>eid).startswith(prefix):
                ev["event.id"] = prefix + <str>eid
        elif eid is not None:
            ev["event.id"] = prefix + str(eid)


def tally(list events, object toss_below, object alert_at, str log, str alert,
          list emitted, dict kinds, str event):
    """Sum each event's indicator scores into ``event.risk_score``; append the events scoring
    at least ``toss_below`` to ``emitted``, with ``threatseer.action`` and ``event.kind``
    ``alert`` from ``alert_at`` on, else action ``log`` and the kind ``kinds`` gives the
    event's action (``event`` for the others): the hub owns event.kind, whatever the sensor
    said. Returns (tossed, alerted)."""
    cdef dict ev
    cdef Py_ssize_t tossed = 0, alerted = 0
    for ev in events:
        score = 0
        for ind in <list?>ev["threatseer.indicators"]:
            score += ind["score"]
        ev["event.risk_score"] = score
        if score < toss_below:
            tossed += 1
            continue
        if score >= alert_at:
            ev["event.kind"] = alert
            ev["threatseer.action"] = alert
            alerted += 1
        else:
            ev["event.kind"] = kinds.get(ev["event.action"], event)
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
            if len(topics) >= 4096:  # categories and actions are sensor-chosen: bound it
                topics.clear()
            topic = topics[key] = topic_of(ev)
        group = groups.get(topic)
        if group is None:
            groups[topic] = [ev]
        else:
            group.append(ev)
    return groups
