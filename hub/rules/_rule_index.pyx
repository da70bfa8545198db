# cython: language_level=3, boundscheck=False, wraparound=False
"""The dynamic engine's hot loop, in C: per event, the candidate rules from the index and
the evaluation of their conditions (the index itself is built in Python:
``threatseer.hub.rules.ruleset``).

A bucket (the rules of one ``event.action``) has ``general_t``, the rule groups that require
no field, and ``field_list``: per indexed field ``(where, cache, native)``, where ``where`` is a
field name or a tuple of names tried in order, ``cache`` maps a field value (exact ``str`` or
``int``) to the groups it selects, and :func:`lookup` computes (and caches) them from the
field's index (``native``: its cache, tables and needle automaton, ``_FieldIndex.native``).
The groups come as a pair: those the field selects alone, and those filed under two fields
(both required literals of an ``and``) that are candidates only when the other field selects
them too.

Why C: for each event this reads up to eight fields and does as many dict lookups; in Python
the interpreter's overhead was a third of the dynamic engine's time.
"""

from threatseer.hub.rules.query.compiler import as_str

# Bounds of each field's cache: entries, characters of all its keys together, and the size
# of a value worth keeping. The character budget is what bounds its memory (a few MB however
# long the command lines); the entry bound is high enough that a fleet's distinct command
# lines (tens of thousands: argv carries pids, paths, hosts) stay cached when they are short:
# a cache emptied every 8192 entries missed two lookups in three on bench/hub_bench.py's mix
# (11k distinct command lines), each miss an automaton pass over the text.
FIELD_CACHE_MAX = 32768
CACHED_CHARS = 4 * 1024 * 1024
CACHED_LEN = 512
CACHED_ITEMS = 32
cdef Py_ssize_t _FIELD_CACHE_MAX = FIELD_CACHE_MAX, _CACHED_LEN = CACHED_LEN
cdef Py_ssize_t _CACHED_ITEMS = CACHED_ITEMS, _CACHED_CHARS = CACHED_CHARS


cdef object _search_text(object value):
    """The field's text for needle search, lower-cased; None when not ASCII (then every rule
    filed under the field is a candidate: Unicode case rules differ from ASCII's)."""
    cdef str text
    if type(value) is str:
        text = value
    elif type(value) is list:
        text = "\0".join([x if type(x) is str else as_str(x) for x in <list>value])
    else:
        text = as_str(value)
    return text.lower() if text.isascii() else None


_NOTHING = ((), ())


cdef class _Found:
    """The (singles, doubles) pairs one lookup collects: the only pair itself when there is
    one (most lookups: one table entry or one needle), else their union, each group once."""
    cdef object first
    cdef dict singles, doubles

    cdef void add(self, tuple pair):
        if self.first is None:
            self.first = pair
            return
        if self.singles is None:
            self.singles, self.doubles = {}, {}
            self._merge(<tuple>self.first)
        self._merge(pair)

    cdef void _merge(self, tuple pair):
        for g in <tuple>pair[0]:
            self.singles[g] = None
        for g in <tuple>pair[1]:
            self.doubles[g] = None

    cdef tuple result(self):
        if self.first is None:
            return _NOTHING
        if self.singles is None:
            return <tuple>self.first
        return (tuple(self.singles), tuple(self.doubles))


cpdef tuple lookup(object index, object value):
    """The groups ``index`` (a field's ``_FieldIndex``) files under ``value``: looked up in its
    tables (per key spec: exact or basename, case folded or not; each item of a list) and
    found by its needles' automaton; cached per value (exact ``str`` or ``int``, or a short
    list of strings as a tuple: ``1``, ``1.0`` and ``True`` never share an entry).

    Returned as ``(singles, doubles)``: the groups this field alone selects, and those filed
    under two fields (``_Group.needs == 2``) that another field must select too. The index's
    tables and automaton hold such pairs already (``_FieldIndex.native``)."""
    return _lookup(<tuple?>index.native, value)


cdef tuple _lookup(tuple native, object value):
    """:func:`lookup` in the index's ``native`` tuple (what the hot loop holds)."""
    cdef dict cache = <dict?>native[0]
    cdef _Found found
    cdef tuple table_entry, hit
    cdef Py_ssize_t i, n, size = 1
    cdef bint base, nocase
    key = None
    if type(value) is int or (type(value) is str and len(<str>value) <= _CACHED_LEN):
        key = value
        if type(value) is str:
            size += len(<str>value)
    elif type(value) is list and len(<list>value) <= _CACHED_ITEMS:
        n = len(<list>value)
        for i in range(n):
            if type((<list>value)[i]) is not str:
                break
            size += len(<str>(<list>value)[i])
        else:
            if size <= _CACHED_LEN:
                key = tuple(<list>value)  # argv repeats too; a tuple never equals a str key
    if key is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    found = _Found()
    items = value if type(value) is list else (value,)
    for table_entry in <tuple?>native[1]:
        base, nocase, table = table_entry
        for x in items:
            if base:
                if type(x) is not str:
                    continue
                i = (<str>x).rfind("/")
                if i < 0:
                    continue
                x = (<str>x)[i + 1:]
            if nocase and type(x) is str:
                x = (<str>x).lower()
            if type(x) is not str and type(x) is not int and x.__hash__ is None:
                continue
            pair = (<dict?>table).get(x)
            if pair is not None:
                found.add(<tuple>pair)
    automaton = native[2]
    if automaton is not None:
        text = _search_text(value)
        if text is None:
            found.add(<tuple?>native[3])
        else:
            for _, pair in automaton.iter(text):
                found.add(<tuple>pair)
    hit = found.result()
    if key is not None:
        held = <list?>native[5]  # [characters of the cache's keys]
        if len(cache) >= _FIELD_CACHE_MAX or <Py_ssize_t>held[0] + size > _CACHED_CHARS:
            cache.clear()
            held[0] = 0
        held[0] = <Py_ssize_t>held[0] + size
        # Distinct values select the same few sets of groups: the cache holds one copy of
        # each (``native[4]``), so that what it keeps alive is mostly its keys, and fewer
        # objects for the garbage collector to walk.
        shared = <dict?>native[4]
        kept = shared.get(hit)
        if kept is None:
            if len(shared) >= _FIELD_CACHE_MAX:
                shared.clear()
            shared[hit] = hit
        else:
            hit = kept
        cache[key] = hit
    return hit


cdef class Group:
    """What the hot loop reads of a rule group (``ruleset._Group`` adds how it is built), as C
    fields: the engine reads them for every candidate of every event, and an attribute of a
    Python object costs a dictionary lookup each time."""
    cdef public object predicate, residual, gate
    cdef public list rules
    cdef public int needs


cdef class Bucket:
    """What the hot loop reads of a bucket (``ruleset._Bucket`` adds how it is built), as C
    fields, for the reason :class:`Group` gives."""
    cdef public tuple general_t, field_list


cdef object _field_value(dict event, object where):
    if type(where) is str:
        return event.get(where)
    for name in <tuple?>where:
        v = event.get(name)
        if v is not None:
            return v
    return None


cdef bint _holds(tuple part, object g):
    """Whether ``g`` is in ``part`` (by identity: groups compare by identity)."""
    cdef Py_ssize_t i
    for i in range(len(part)):
        if <object>part[i] is g:
            return True
    return False


cpdef tuple candidates(Bucket bucket, dict event):
    """The rule groups of ``bucket`` that can match ``event``, each once: those that require
    nothing, those one field's lookup selects, and those filed under two fields that both
    select (a group of the second kind is in exactly two fields' ``doubles``)."""
    cdef tuple out = bucket.general_t
    cdef tuple entry, hit, part
    cdef list doubles = None
    cdef int sources = 0
    for entry in bucket.field_list:
        value = _field_value(event, entry[0])
        if value is None:
            continue
        hit = None
        if type(value) is str or type(value) is int:
            hit = (<dict?>entry[1]).get(value)
        if hit is None:
            hit = _lookup(<tuple>entry[2], value)
        part = <tuple>hit[0]
        if part:
            out = out + part if out else part
            sources += 1
        part = <tuple>hit[1]
        if part:
            if doubles is None:
                doubles = [part]
            else:
                doubles.append(part)
    if doubles is not None and len(doubles) > 1:
        both = _found_twice(doubles)
        if both:
            out = out + both if out else both
            sources += 1
    # A group filed under two fields by one requirement may have been found twice.
    return _unique(out) if sources > 1 else out


cdef tuple _found_twice(list parts):
    """The groups found in two of the field lookups' ``doubles`` (each is in two at most), in
    the order their second finding comes. The parts are a few short tuples: comparing
    pointers costs less than building a set for each event."""
    cdef list both = []
    cdef tuple part
    cdef Py_ssize_t i, j, k
    for i in range(1, len(parts)):
        part = <tuple>parts[i]
        for k in range(len(part)):
            g = part[k]
            for j in range(i):
                if _holds(<tuple>parts[j], g):
                    both.append(g)
                    break
    return tuple(both)


cdef tuple _unique(tuple groups):
    """``groups`` without repeats, in first-found order (``tuple(dict.fromkeys(groups))``
    without a dict: a candidate list is a handful of groups)."""
    cdef list out = []
    cdef Py_ssize_t i, j, n = len(groups)
    for i in range(n):
        g = groups[i]
        for j in range(i):
            if <object>groups[j] is g:
                break
        else:
            out.append(g)
    return groups if len(out) == n else tuple(out)


def _order(rule):
    return rule.order


cdef bint _gated(Group g, dict ev) except -1:
    """Whether ``g`` is a group of sequence steps none of whose sequences would use ``ev``
    (``_Group.gate``): then its condition need not be evaluated."""
    cdef tuple entry
    gate = g.gate
    if gate is None:
        return False
    for entry in <tuple>gate:
        seq = entry[0]
        if entry[2] and not seq.count:  # a later step of an idle ordered sequence
            continue
        names = entry[3]
        if names is None:
            if seq.may_advance(entry[1], ev):
                return False
            continue
        for name in <tuple>names:  # every join value present (SequenceRule.key)
            v = ev.get(name)
            if v is None or v == "":
                break
        else:
            return False
    return True


cdef list _matching(dict buckets, Bucket default, dict ev, bint live):
    cdef list hits = []
    cdef Group g
    action = ev.get("event.action")
    bucket = buckets.get(action) if type(action) is str else None
    if bucket is not None:
        for g in candidates(<Bucket?>bucket, ev):
            if live and g.gate is not None and _gated(g, ev):
                continue
            if g.residual(ev):
                hits.extend(g.rules)
    elif default.general_t or default.field_list:
        for g in candidates(default, ev):
            if live and g.gate is not None and _gated(g, ev):
                continue
            if g.predicate(ev):
                hits.extend(g.rules)
    if len(hits) > 1:
        hits.sort(key=_order)
    return hits


cpdef list matching(dict buckets, Bucket default, dict ev):
    """The rules ``ev`` matches, in rule order: the one matcher, used by the engine (through
    :func:`add_indicators`) and by ``rules test`` alike. In its action's bucket (of
    ``buckets``), a group's ``residual`` is tested (the index guarantees the action tests);
    other events are checked against ``default`` with the full ``predicate``. Every
    sequence step ``ev`` matches is listed (the engine skips those its sequence would
    ignore: :func:`add_indicators`)."""
    return _matching(buckets, default, ev, False)


def add_indicators(dict buckets, Bucket default, list events, object failed):
    """Extend each event's ``threatseer.indicators`` with the indicators of the rules it
    :func:`matching` finds (a sequence's step gives one only when the event completes the
    sequence; so the condition of a step its sequence would ignore is not evaluated). An
    event whose rules raise is passed to ``failed`` (one bad rule never stops the
    scoring)."""
    cdef dict ev
    cdef list hits, out
    for ev in events:
        try:
            hits = _matching(buckets, default, ev, True)
            if hits:
                out = ev["threatseer.indicators"]
                for r in hits:
                    ind = r.indicator_dict(ev)
                    if ind is not None:  # a sequence step that did not complete its sequence
                        out.append(ind)
        except Exception as exc:  # a rule bug: the engine counts it, scoring goes on
            failed(exc)
