# Included by _bpf.pyx: the decoder's state and its dispatch on the record kind. Each event
# family's records are decoded by the functions in its own file (process.pxi, file.pxi, ...).

cdef str _EVENT = "event"
cdef str _SUCCESS = "success"
cdef str _FAILURE = "failure"
cdef str _UNKNOWN = "unknown"
cdef dict _CATS = {a: (c, t) for a, (c, t) in actions.CATEGORIES.items()}

cdef enum:
    EVENT_FIELDS = 40  # fields an enriched event may reach without a resize

# decode() encoded the record into the current run (Decoder.take_run)
cdef object ENCODED = object()

# ECS types user and group ids as keyword: strings, made once per id value.
cdef dict _ID_STRINGS = {}


cdef str _id(uint32_t value):
    s = _ID_STRINGS.get(value)
    if s is None:
        if len(_ID_STRINGS) > 4096:
            _ID_STRINGS.clear()
        s = _ID_STRINGS[value] = str(value)
    return <str>s


cdef inline str _cstr(const char *p, size_t cap):
    """Decode a NUL-terminated kernel string of capacity cap."""
    return p[:strnlen(p, cap)].decode("utf-8", "replace")


cdef inline str _str_at(const char *p, uint32_t n):
    return p[:strnlen(p, n)].decode("utf-8", "replace")


cdef class Decoder:
    """Records into flat ECS dicts. ``offset_ns`` (wall clock minus boot clock) is set by the
    reader before each drain."""

    cdef long long offset_ns
    # process.start is reckoned from one boot time for the sensor's life (native/clock.py).
    cdef long long boot_wall_ns
    cdef dict starts           # task start (boot ns) -> process.start
    # The acting task's fields as Python objects, kept from the previous record: a stream of
    # records from one task (the usual case) reuses them instead of allocating ten ints and
    # decoding two strings per record.
    cdef tsr_task last_task
    cdef bint have_last_task
    cdef object t_pid, t_tid, t_ppid, t_uid, t_gid, t_euid, t_auid, t_cgroup, t_pidns
    cdef object t_mntns, t_start, t_comm, t_memcg
    # The same fields as an encoded event writes them (encode/file.pxi task_fields), made
    # once per task: None until an encoded event of this task needs them.
    cdef bytes t_encoded
    # event.sequence and event.id, given here in kernel order once the sensor says who it is
    # (set_identity); the sensor's own events take theirs from next_sequence().
    cdef bint stamping
    cdef unsigned long long seq
    cdef str id_prefix
    cdef bytes id_prefix_b
    # Events of known processes encoded straight to msgpack (encode/*.pxi), when enabled.
    cdef Contexts contexts
    cdef object wrap           # what a run of encoded events is handed out as: wrap(bytes, n)
    cdef Writer w              # the current run: consecutive encoded events' msgpack
    cdef Py_ssize_t run_events

    def __cinit__(self):
        self.boot_wall_ns = clock.BOOT_WALL_NS
        self.starts = {}
        self.contexts = Contexts()
        self.w.p = NULL
        self.w.obj = NULL
        self.w.n = self.w.cap = self.w.hint = self.w.room = 0

    def __dealloc__(self):
        w_free(&self.w)

    cdef object take_run(self):
        """The run of encoded events so far, handed out (None when empty)."""
        if not self.run_events:
            return None
        n = self.run_events
        self.run_events = 0
        run = self.wrap(w_take(&self.w), n)
        return run

    cdef inline object next_seq(self):
        self.seq += 1
        return self.seq

    cdef task(self, const tsr_task *t):
        """Refresh the acting task's cached Python fields when the task changed."""
        cdef char start[40]
        cdef int sn
        if not self.have_last_task or memcmp(
                &t.start_ns, &self.last_task.start_ns, sizeof(tsr_task) - sizeof(t.ts_ns)) != 0:
            self.last_task = t[0]
            self.have_last_task = True
            self.t_pid, self.t_tid, self.t_ppid = t.pid, t.tid, t.ppid
            self.t_uid, self.t_gid, self.t_euid = _id(t.uid), _id(t.gid), _id(t.euid)
            self.t_auid = _id(t.auid)
            self.t_cgroup, self.t_pidns, self.t_mntns = t.cgroup_id, t.pidns, t.mntns
            # per process, not per task switch: formatting another second here would also
            # evict the @timestamp formatter's cached second
            self.t_start = self.starts.get(t.start_ns)
            if self.t_start is None:
                sn = ts_iso8601(<unsigned long long>(<long long>t.start_ns + self.boot_wall_ns),
                                start)
                if len(self.starts) > 4096:
                    self.starts.clear()
                self.t_start = self.starts[t.start_ns] = start[:sn].decode("ascii")
            self.t_comm = _cstr(t.comm, TSR_COMM_LEN)
            self.t_memcg = _cstr(t.memcg, TSR_MEMCG_LEN)
            self.t_encoded = None

    cdef dict common(self, const tsr_hdr *h, str action):
        cdef char ts[40]
        cdef int n = ts_iso8601(<unsigned long long>(<long long>h.task.ts_ns + self.offset_ns), ts)
        cat, typ = _CATS[action]
        self.task(&h.task)
        cdef dict d = _PyDict_NewPresized(EVENT_FIELDS)
        d["@timestamp"] = ts[:n].decode("ascii")
        d["event.kind"] = _EVENT
        # One list per action, shared by its events (as actions.CATEGORIES' are by synthetic
        # events): nothing in the sensor edits them, and two allocations per event were ~3%.
        d["event.category"] = cat
        d["event.type"] = typ
        d["event.action"] = action
        d["process.pid"] = self.t_pid
        d["process.thread.id"] = self.t_tid
        d["process.name"] = self.t_comm
        d["process.parent.pid"] = self.t_ppid
        d["user.id"] = self.t_uid
        d["group.id"] = self.t_gid
        d["user.effective.id"] = self.t_euid
        d["threatseer.user.audit.id"] = self.t_auid
        d["threatseer.cgroup.id"] = self.t_cgroup
        d["threatseer.cgroup.memory"] = self.t_memcg
        d["threatseer.ns.pid"] = self.t_pidns
        d["threatseer.ns.mnt"] = self.t_mntns
        d["process.start"] = self.t_start
        if self.stamping:
            seq = self.next_seq()
            d["event.sequence"] = seq
            d["event.id"] = self.id_prefix + str(seq)
        return d


    cdef object decode(self, const uint8_t *data, size_t size):
        """A record as a flat ECS dict, or (known process, encoding on) as its msgpack."""
        cdef const tsr_hdr *h = <const tsr_hdr *>data
        cdef uint16_t kind = h.kind
        if size < sizeof(tsr_hdr) or h.size > size:
            raise ValueError("short record")
        if kind == TSR_OPEN:
            if self.wrap is not None and encode_open(self, <const tsr_open *>data):
                return ENCODED
            return decode_open(self, <const tsr_open *>data)
        if kind == TSR_EXEC:
            # the process table changes here: encoded contexts of this process and its
            # children are stale from this record on (encode/context.pxi)
            self.contexts.bump(h.task.pid)
            return decode_exec(self, <const tsr_exec *>data)
        if kind == TSR_FORK:
            self.contexts.bump(h.task.pid)
            return self.common(h, actions.FORK)
        if kind == TSR_EXIT:
            self.contexts.bump(h.task.pid)
            return decode_exit(self, <const tsr_exit *>data)
        if kind == TSR_CONNECT or kind == TSR_ACCEPT or kind == TSR_LISTEN or kind == TSR_DNS:
            return decode_net(self, <const tsr_net *>data)
        if kind == TSR_CGROUP_MKDIR or kind == TSR_CGROUP_RMDIR:
            return decode_cgroup(self, <const tsr_cgroup *>data)
        if kind == TSR_FCHANGE:
            return decode_fchange(self, <const tsr_fchange *>data)
        if kind == TSR_CRED:
            return decode_cred(self, <const tsr_cred *>data)
        if kind == TSR_SYS:
            return decode_sys(self, <const tsr_sys *>data)
        raise ValueError(f"unknown record kind {kind}")


    cdef str iso(self, int64_t sec, uint32_t nsec):
        cdef char ts[40]
        cdef int n = ts_iso8601(<unsigned long long>(sec * 1000000000LL + nsec), ts)
        return ts[:n].decode("ascii")

