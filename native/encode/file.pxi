# Included by _bpf.pyx: a sensitive open of a known process, encoded straight from the
# record into the msgpack of the event the sensor would send (appended to the decoder's run
# of consecutive encoded events, handed out as one wrap(bytes, count)): the same fields, in the same
# order and forms, as decode_open() (decode/file.pxi) and Decoder.common() give, followed by
# what the sensor's enrichment adds (encode/context.pxi). Used only when the decoder stamps
# events (event.sequence, event.id) and the process has a valid entry; otherwise None and the
# record takes the dict path. tests/native/test_native_encoder.py compares the two.

# The keys and constant values, as msgpack.
cdef bytes _K_TS = _mp_str("@timestamp")
cdef bytes _K_OPEN_HEAD = (_mp_str("event.kind") + _mp_str("event") + _mp_str("event.category")
                           + _mp_strs(actions.CATEGORIES[actions.OPEN][0]) + _mp_str("event.type")
                           + _mp_strs(actions.CATEGORIES[actions.OPEN][1])
                           + _mp_str("event.action") + _mp_str(actions.OPEN))
cdef bytes _K_PID = _mp_str("process.pid")
cdef bytes _K_TID = _mp_str("process.thread.id")
cdef bytes _K_NAME = _mp_str("process.name")
cdef bytes _K_PPID = _mp_str("process.parent.pid")
cdef bytes _K_UID = _mp_str("user.id")
cdef bytes _K_GID = _mp_str("group.id")
cdef bytes _K_EUID = _mp_str("user.effective.id")
cdef bytes _K_AUID = _mp_str("threatseer.user.audit.id")
cdef bytes _K_CGID = _mp_str("threatseer.cgroup.id")
cdef bytes _K_MEMCG = _mp_str("threatseer.cgroup.memory")
cdef bytes _K_PIDNS = _mp_str("threatseer.ns.pid")
cdef bytes _K_MNTNS = _mp_str("threatseer.ns.mnt")
cdef bytes _K_START = _mp_str("process.start")
cdef bytes _K_SEQ = _mp_str("event.sequence")
cdef bytes _K_ID = _mp_str("event.id")
cdef bytes _K_PATH = _mp_str("file.path")
cdef bytes _K_FLAGS = _mp_str("threatseer.open.flags")
cdef bytes _K_RESULT = _mp_str("threatseer.open.result")
cdef bytes _V_OUTCOME_OK = _mp_str("event.outcome") + _mp_str("success")
cdef bytes _V_OUTCOME_FAIL = _mp_str("event.outcome") + _mp_str("failure")
# The fields of an open event before the enrichment's: Decoder.common() (18 with its
# stamp) and decode_open() (4).
cdef enum:
    OPEN_FIELDS = 18 + 2 + 4

cdef list _OPEN_FLAGS_MP = [None] * 16


cdef bytes _open_flags_mp(uint32_t f):
    cdef uint32_t key = (f & O_ACCMODE) | (4 if f & O_CREAT else 0) | (8 if f & O_TRUNC else 0)
    cdef object b = _OPEN_FLAGS_MP[key]
    if b is None:
        b = _OPEN_FLAGS_MP[key] = _mp_strs(_open_flag_names(f))
    return <bytes>b


cdef inline void w_bytes(Writer *w, bytes b) noexcept:
    w_raw(w, <const char *>b, len(b))


cdef inline bint _ascii(const char *p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if <uint8_t>p[i] >= 0x80:
            return False
    return True


cdef bytes task_fields(Decoder dec, const tsr_task *t):
    """The acting task's fields (process.pid .. process.start) as msgpack key/value pairs,
    from the decoder's cache of them (Decoder.task). Made once per task and copied into each
    of its encoded events: a flood's events come from one task, and writing the thirteen
    fields one by one (five strings through the unicode API) costs a tenth of the encoding."""
    cdef Writer tw
    memset(&tw, 0, sizeof(Writer))
    try:
        w_reserve(&tw, 512 + TSR_MEMCG_LEN)
        w_bytes(&tw, _K_PID)
        w_uint(&tw, t.pid)
        w_bytes(&tw, _K_TID)
        w_uint(&tw, t.tid)
        w_bytes(&tw, _K_NAME)
        w_pystr(&tw, dec.t_comm)
        w_bytes(&tw, _K_PPID)
        w_uint(&tw, t.ppid)
        w_bytes(&tw, _K_UID)
        w_pystr(&tw, dec.t_uid)
        w_bytes(&tw, _K_GID)
        w_pystr(&tw, dec.t_gid)
        w_bytes(&tw, _K_EUID)
        w_pystr(&tw, dec.t_euid)
        w_bytes(&tw, _K_AUID)
        w_pystr(&tw, dec.t_auid)
        w_bytes(&tw, _K_CGID)
        w_uint(&tw, t.cgroup_id)
        w_bytes(&tw, _K_MEMCG)
        w_pystr(&tw, dec.t_memcg)
        w_bytes(&tw, _K_PIDNS)
        w_uint(&tw, t.pidns)
        w_bytes(&tw, _K_MNTNS)
        w_uint(&tw, t.mntns)
        w_bytes(&tw, _K_START)
        w_pystr(&tw, dec.t_start)
        return w_take(&tw)
    finally:
        w_free(&tw)


cdef bint encode_open(Decoder dec, const tsr_open *o) except -1:
    """Append the event to the decoder's run of encoded events (dec.w); False when the record
    must take the dict path."""
    cdef const tsr_task *t = &o.h.task
    cdef Writer *w = &dec.w
    cdef char ts[40]
    cdef char digits[24]
    cdef int n, nd
    cdef unsigned long long seq
    cdef Py_ssize_t plen = strnlen(o.path, o.path_len)
    if not dec.stamping or not _ascii(o.path, plen):
        return False
    dec.task(t)
    ctx = dec.contexts.lookup(t.pid, t.ppid, dec.t_uid, dec.t_memcg)
    if ctx is None:
        return False
    cdef bytes tail = <bytes>ctx[2]
    cdef uint32_t ntail = ctx[3]
    if dec.t_encoded is None:
        dec.t_encoded = task_fields(dec, t)
    cdef bytes task_b = <bytes>dec.t_encoded
    n = ts_iso8601(<unsigned long long>(<long long>t.ts_ns + dec.offset_ns), ts)
    # the constant keys and values, the timestamp, sequence and id digits fit in 512
    w_reserve(w, 512 + len(task_b) + plen + len(tail) + len(dec.id_prefix_b))
    w_map_header(w, OPEN_FIELDS + ntail)
    w_bytes(w, _K_TS)
    w_str(w, ts, n)
    w_bytes(w, _K_OPEN_HEAD)
    w_bytes(w, task_b)
    dec.seq += 1
    seq = dec.seq
    w_bytes(w, _K_SEQ)
    w_uint(w, seq)
    w_bytes(w, _K_ID)
    nd = 0
    while True:
        digits[nd] = <char>(48 + seq % 10)
        nd += 1
        seq //= 10
        if seq == 0:
            break
    w_str_header(w, len(dec.id_prefix_b) + nd)
    w_bytes(w, dec.id_prefix_b)
    while nd > 0:
        nd -= 1
        w_byte(w, <uint8_t>digits[nd])
    w_bytes(w, _K_PATH)
    w_str(w, o.path, plen)
    w_bytes(w, _K_FLAGS)
    w_bytes(w, _open_flags_mp(o.flags))
    w_bytes(w, _K_RESULT)
    w_int(w, o.result)
    w_bytes(w, _V_OUTCOME_OK if o.result >= 0 else _V_OUTCOME_FAIL)
    w_bytes(w, tail)
    dec.run_events += 1
    return True
