# cython: language_level=3, boundscheck=False, wraparound=False
"""The profile engine's hot loop, in C: what each event shows, whose it is, and whether its
subject's profile has seen it (the engine, its learning window and its storage are
``threatseer.hub.engines.profile`` and ``threatseer.hub.profiles``).

The subject is the container image when the event comes from a container (every replica of an
image should behave alike), else the (host, executable) pair. What an event shows are
``kind\\tvalue`` strings: the executable and its argv shape, the parent -> child pair, the
outbound port and address prefix (/24, /64), the sensitive file opened.

Why C: this loop reads a dozen fields, builds a few strings and does a few set lookups per
event; in Python the interpreter's overhead was most of its cost (a fifth of the hub's CPU).
"""

import ipaddress

from threatseer.hub.argv_shape import MAX_ARGS, MAX_LEN, mask

cdef frozenset PROFILED = frozenset(("exec", "connect", "open"))
cdef Py_ssize_t _MAX_ARGS = MAX_ARGS, _MAX_LEN = MAX_LEN
# These caches hold values that repeat endlessly (argv lines, paths, addresses, subjects) and
# are cleared when full, so their size is bounded whatever the input.
cdef dict _shapes = {}
cdef Py_ssize_t _SHAPES_MAX = 50_000
cdef dict _prefixes = {}
cdef Py_ssize_t _PREFIXES_MAX = 100_000
# Subjects by image, or by (host, executable) (str values only): one string per subject,
# made once with its hash kept, instead of a new string to build and hash per event.
cdef dict _subjects = {}
cdef Py_ssize_t _SUBJECTS_MAX = 50_000


cdef class Profile:
    """One subject's profile: counters, learning state and the behaviour it has shown."""

    cdef public str subject
    cdef public str kind  # "container" or "host"
    cdef public double first_seen, last_seen
    cdef public long long events
    cdef public bint learned
    cdef public object learned_at  # float or None
    cdef public set items  # "kind\tvalue"

    def __init__(self, str subject, str kind, double first_seen, double last_seen=0.0,
                 long long events=0, bint learned=False, learned_at=None, items=None):
        self.subject, self.kind = subject, kind
        self.first_seen, self.last_seen = first_seen, last_seen
        self.events, self.learned, self.learned_at = events, learned, learned_at
        self.items = set() if items is None else set(items)

    def row(self):
        return {"subject": self.subject, "kind": self.kind, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "events": self.events,
                "learned": int(self.learned), "learned_at": self.learned_at}

    def __repr__(self):
        return (f"Profile({self.subject!r}, {self.kind!r}, events={self.events}, "
                f"learned={bool(self.learned)}, items={len(self.items)})")


cpdef str argv_shape(object args):
    """The shape of an argv (without argv[0], which the executable already names), or of one
    text (a path): numbers, hex, UUIDs and temp paths masked (see hub/argv_shape.py)."""
    cdef str line
    if isinstance(args, str):
        line = args
    elif type(args) is list:  # argv: sliced in C, no slice object
        try:
            line = " ".join((<list>args)[1:_MAX_ARGS + 1])
        except TypeError:
            line = " ".join([str(a) for a in (<list>args)[1:_MAX_ARGS + 1]])
    else:
        try:
            line = " ".join(args[1:_MAX_ARGS + 1])  # argv is all strings but in odd input
        except TypeError:
            line = " ".join([str(a) for a in args[1:_MAX_ARGS + 1]])
    if len(line) > _MAX_LEN:
        line = line[:_MAX_LEN]
    shape = _shapes.get(line)
    if shape is None:
        shape = mask(line)
        if len(_shapes) >= _SHAPES_MAX:
            _shapes.clear()
        _shapes[line] = shape
    return shape


cpdef str address_prefix(str ip):
    """The /24 (IPv4) or /64 (IPv6) network of ``ip``, as text."""
    hit = _prefixes.get(ip)
    if hit is None:
        if ":" not in ip:
            hit = ip.rpartition(".")[0] + ".0/24"
        else:
            try:
                hit = str(ipaddress.ip_network(f"{ip}/64", strict=False))
            except ValueError:
                hit = ip
        if len(_prefixes) >= _PREFIXES_MAX:
            _prefixes.clear()
        _prefixes[ip] = hit
    return hit


cpdef list observations(dict ev):
    """The behaviour an event shows, as ``kind\\tvalue`` strings (None: nothing to profile)."""
    return _observations(ev, ev["event.action"])


cdef list _observations(dict ev, object action):
    """:func:`observations` of ``ev``, whose ``event.action`` is ``action``."""
    if action == "exec":
        exe = ev["process.executable"]
        obs = [f"argv\t{exe} {argv_shape(ev['process.args'] or ())}"]
        if ev.get("container.image.name"):  # for (host, exe) subjects exe is the subject
            obs.append(f"exe\t{exe}")
        parent = ev.get("process.parent.executable")
        if parent:
            obs.append(f"parent\t{parent} > {exe}")
        return obs
    if action == "connect":
        ip = ev["destination.ip"]
        return [f"port\t{ev['network.transport']}/{ev['destination.port']}",
                f"net\t{address_prefix(ip) if isinstance(ip, str) else ip}"]
    if action == "open":
        return [f"file\t{argv_shape(str(ev['file.path']))}"]
    return None


cpdef str subject_of(dict ev):
    """The subject of an event, or None when it names neither image nor executable."""
    image = ev.get("container.image.name")
    if image:
        if type(image) is str:
            subject = _subjects.get(image)
            return _subject(image, f"container:{image}") if subject is None else subject
        return f"container:{image}"
    exe = ev.get("process.executable")
    if exe:
        host = ev.get("host.name") or ev.get("agent.id") or "?"
        if type(exe) is str and type(host) is str:
            key = (host, exe)
            subject = _subjects.get(key)
            return _subject(key, f"host:{host}:{exe}") if subject is None else subject
        return f"host:{host}:{exe}"
    return None


cdef str _subject(object key, str subject):
    """``subject``, remembered under ``key`` (see ``_subjects``)."""
    if len(_subjects) >= _SUBJECTS_MAX:
        _subjects.clear()
    _subjects[key] = subject
    return subject


def subject_kind(str subject):
    """``container`` or ``host``: the kind of a subject made by :func:`subject_of`."""
    return "container" if subject.startswith("container:") else "host"


def observe(list events, dict profiles, dict dirty, list new_items, double now,
            double learn_seconds, long long learn_min_events, dict normal, dict abnormal):
    """Profile and score ``events`` (their action's behaviour, see the module docstring):
    while a subject learns, record what it shows (new items are appended to ``new_items``
    as ``(subject, item, now)``); once learned, append ``normal`` to the event's indicators
    when everything it shows was learned, else a copy of ``abnormal`` naming what is new.
    Touched profiles are put in ``dirty``. Returns the number of events skipped because a
    field had an odd type (one bad event never costs the batch)."""
    cdef dict ev, ind
    cdef list obs, new
    cdef set items
    cdef str subject, item
    cdef Profile prof
    cdef Py_ssize_t errors = 0
    for ev in events:
        action = ev["event.action"]
        if action not in PROFILED:
            continue
        try:
            obs = _observations(ev, action)
            subject = subject_of(ev) if obs else None
        except Exception:  # a field of an odd type: skip this event, never the batch
            errors += 1
            continue
        if subject is None:
            continue
        prof = profiles.get(subject)
        if prof is None:
            prof = Profile(subject, subject_kind(subject), now)
            profiles[subject] = prof
        if not prof.learned and prof.events >= learn_min_events and \
                now - prof.first_seen >= learn_seconds:
            prof.learned = True  # the window closed before this event: score it
            prof.learned_at = now
        prof.events += 1
        prof.last_seen = now
        dirty[subject] = prof
        items = prof.items
        if not prof.learned:
            for item in obs:
                if item not in items:
                    items.add(item)
                    new_items.append((subject, item, now))
            continue
        for item in obs:
            if item not in items:
                break
        else:  # all learned: the common case, no list built
            ev["threatseer.indicators"].append(normal)
            continue
        ind = dict(abnormal)
        ind["description"] = f"{subject} did something it never did while learning"
        new = []
        for item in obs:  # item: a str, so its replace is a C call, not a method lookup
            if item not in items:
                new.append(item.replace("\t", ": ", 1))
        ind["extra_info"] = {"subject": subject, "new": new}
        ind["tags"] = ["profile"]
        ev["threatseer.indicators"].append(ind)
    return errors
