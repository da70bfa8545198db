# cython: language_level=3, boundscheck=False, wraparound=False
"""The static engine's hot loop, in C (the engine, its lists, indexes and caches are
``threatseer.hub.engines.static``): per event, the check of its action, a lookup in the
engine's cache, and a call back into the engine only on a miss or a hit.

Why C: the lists are indexed, so per event this is a handful of dict lookups, and in Python
the interpreter's overhead was most of the engine's time.
"""

cdef object _MISS = object()
# Open flags that make an open of a sensitive file a write (scored with its write score).
WRITE_FLAGS = frozenset(("write", "create", "truncate", "rdwr", "wronly"))
cdef frozenset _WRITE_FLAGS = WRITE_FLAGS


cdef str _basename(object path):
    """``path.rpartition("/")[2]`` without the tuple and the two strings it makes (TypeError
    for what is not a str, as the engine counts a field of an odd type)."""
    cdef str text = <str?>path
    cdef Py_ssize_t i = text.rfind("/")
    return text if i < 0 else text[i + 1:]


cpdef bint is_write(object flags):
    """Whether ``threatseer.open.flags`` (a list of names, or one text) asks for writing."""
    cdef str text
    if isinstance(flags, str):
        text = (<str>flags).lower()
        for f in _WRITE_FLAGS:
            if f in text:
                return True
        return False
    if isinstance(flags, (list, tuple)):
        for f in flags:
            if (f if type(f) is str else str(f)).lower() in _WRITE_FLAGS:
                return True
    return False


# File changes that write a file's content, scored with the entry's write score on file.path:
# created, opened for writing, truncated, or renamed or linked onto (file.path is then the
# new name).
WRITTEN = frozenset(("create", "write-open", "truncate", "log-truncate", "rename", "link"))
cdef frozenset _WRITTEN = WRITTEN


cdef void _add_file_indicators(object engine, dict ev, object path, list hits,
                               bint write) except *:
    """One indicator per sensitive-file entry matching ``path``, read or write."""
    cdef str access = "write" if write else "read"
    cdef dict ind
    cdef list out = ev["threatseer.indicators"]
    for sf in hits:
        ind = dict(engine._file_indicator(sf, write))
        ind["extra_info"] = {"path": path, "access": access}
        ind["tags"] = list(ind["tags"])
        out.append(ind)


def scan(object engine, list events):
    """Add the static indicators of ``events`` (risky process, executable SHA-256, sensitive
    file read by an open or written by a file change, IP and DNS IOCs). Returns the number of events skipped because a field had an odd
    type (one bad event never costs the batch)."""
    cdef dict ev
    cdef dict risky = engine.risky, sha256 = engine.sha256, domains = engine.domains
    cdef dict path_cache = engine._path_cache, ip_cache = engine._ip_cache
    cdef dict domain_cache = engine._domain_cache
    cdef bint check_files = bool(engine.exact_files) or engine.any_glob is not None
    cdef bint check_ips = bool(engine.exact_ips) or bool(engine.nets)
    cdef Py_ssize_t errors = 0
    for ev in events:
        try:
            action = ev["event.action"]
            if action == "exec":
                if risky:
                    exe = ev.get("process.executable") or ""
                    ind = risky.get(_basename(exe)) or risky.get(ev.get("process.name"))
                    if ind is not None:
                        ev["threatseer.indicators"].append(ind)
                if sha256:
                    digest = ev.get("process.hash.sha256")
                    if digest and digest in sha256:
                        engine._sha256_indicator(ev, digest)
            elif action == "open":
                # a write-intent open is scored on the file change that follows it (the
                # sensor reports one under its watched paths), not twice
                if check_files and not is_write(ev.get("threatseer.open.flags")):
                    path = ev["file.path"]
                    hits = path_cache.get(path)
                    if hits is None:
                        hits = engine.files_matching(path)
                    if hits:
                        _add_file_indicators(engine, ev, path, hits, False)
            elif action in _WRITTEN:
                if check_files:
                    path = ev.get("file.path")
                    if type(path) is str:
                        hits = path_cache.get(path)
                        if hits is None:
                            hits = engine.files_matching(path)
                        if hits:
                            _add_file_indicators(engine, ev, path, hits, True)
            elif action == "connect" or action == "accept":
                if check_ips:
                    ip = ev["destination.ip" if action == "connect" else "source.ip"]
                    if type(ip) is str:
                        hit = ip_cache.get(ip, _MISS)
                        if hit is _MISS:
                            hit = engine.ip_ioc(ip)
                        if hit is not None:
                            engine._ip_indicator(ev, ip, hit)
            elif action == "dns-query" and domains:
                name = ev["dns.question.name"]
                if type(name) is str:
                    hit = domain_cache.get(name, _MISS)
                    if hit is _MISS:
                        hit = engine.domain_ioc(name)
                    if hit is not None:
                        engine._dns_indicator(ev, name, hit)
        except Exception:  # a field of an odd type: skip this event, never the batch
            errors += 1
    return errors
