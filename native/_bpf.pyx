# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The hot path: load/attach threatseer.bpf.o, poll its ring buffer, decode records in C.

One Python-level call (:meth:`BpfProbe.poll`) drains up to ``max_events`` records through
ONE ``ring_buffer__consume`` call; libbpf invokes :func:`_on_sample` (a C function) per
record, which builds the flat ECS dict directly with interned key strings. No Python
callback per event. The record layouts come from native/include/records.h, shared with the
BPF programs.
"""

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

# found through cythonize(include_path=["native"]) in setup.py
from checkrc cimport check_ptr, check_rc
from libbpf cimport *

import gc

from threatseer.sensor import ecs

cdef extern from *:
    """
    #include <stdarg.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <time.h>
    #include <bpf/libbpf.h>

    /* libbpf's messages (verifier logs included) go here instead of stderr, so errors can
     * carry the tail of the log. */
    static char ts_logbuf[32768];
    static size_t ts_loglen = 0;

    static void ts_log_append(const char *s, size_t n) {
        size_t cap = sizeof(ts_logbuf) - 1;
        if (n >= cap) { s += n - cap; n = cap; }
        if (ts_loglen + n > cap) {
            size_t keep = cap - n;
            if (keep > ts_loglen) keep = ts_loglen;
            memmove(ts_logbuf, ts_logbuf + ts_loglen - keep, keep);
            ts_loglen = keep;
        }
        memcpy(ts_logbuf + ts_loglen, s, n);
        ts_loglen += n;
        ts_logbuf[ts_loglen] = 0;
    }

    static int ts_log_print(enum libbpf_print_level level, const char *fmt, va_list ap) {
        va_list cp;
        if (level == LIBBPF_DEBUG) return 0;
        va_copy(cp, ap);
        int n = vsnprintf(NULL, 0, fmt, cp);
        va_end(cp);
        if (n <= 0) return 0;
        char *buf = malloc((size_t)n + 1);
        if (!buf) return 0;
        vsnprintf(buf, (size_t)n + 1, fmt, ap);
        ts_log_append(buf, (size_t)n);
        free(buf);
        return 0;
    }

    static void ts_log_reset(void) {
        ts_loglen = 0;
        ts_logbuf[0] = 0;
        libbpf_set_print(ts_log_print);
    }

    static const char *ts_log_tail(size_t n) {
        return ts_loglen > n ? ts_logbuf + ts_loglen - n : ts_logbuf;
    }

    static long long ts_clock_offset_ns(void) {
        struct timespec rt, bt;
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_BOOTTIME, &bt);
        return (long long)(rt.tv_sec - bt.tv_sec) * 1000000000LL + (rt.tv_nsec - bt.tv_nsec);
    }

    /* "2026-11-28T02:22:40.123456Z" into out (>= 32 bytes); returns its length (27).
     * The "YYYY-MM-DDTHH:MM:SS." part is cached per second: events come in bursts. */
    static time_t ts_cached_sec = -1;
    static char ts_cached[21];

    static int ts_iso8601(unsigned long long wall_ns, char *out) {
        time_t secs = (time_t)(wall_ns / 1000000000ULL);
        unsigned long usec = (unsigned long)((wall_ns % 1000000000ULL) / 1000ULL);
        if (secs != ts_cached_sec) {
            struct tm t;
            gmtime_r(&secs, &t);
            snprintf(ts_cached, sizeof(ts_cached), "%04d-%02d-%02dT%02d:%02d:%02d.",
                     t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec);
            ts_cached_sec = secs;
        }
        memcpy(out, ts_cached, 20);
        for (int i = 25; i >= 20; i--) {
            out[i] = (char)('0' + usec % 10);
            usec /= 10;
        }
        out[26] = 'Z';
        out[27] = 0;
        return 27;
    }
    """
    void ts_log_reset()
    const char *ts_log_tail(size_t n)
    long long ts_clock_offset_ns()
    int ts_iso8601(unsigned long long wall_ns, char *out)

cdef extern from "<string.h>" nogil:
    size_t strnlen(const char *s, size_t maxlen)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, unsigned int size)

cdef extern from "<sys/epoll.h>" nogil:
    struct epoll_event:
        uint32_t events
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)

cdef extern from "records.h":
    enum:
        TSR_EXEC
        TSR_FORK
        TSR_EXIT
        TSR_OPEN
        TSR_CONNECT
        TSR_ACCEPT
        TSR_LISTEN
        TSR_DNS
        TSR_CGROUP_MKDIR
        TSR_CGROUP_RMDIR
        TSR_C_MAX
        TSR_F_ARGS_TRUNC
        TSR_F_PATH_USER
        TSR_F_PATH_TRUNC
        TSR_COMM_LEN
        TSR_MEMCG_LEN
        TSR_PREFIX_MAX
        TSR_ARGS_MAXCOUNT
        TSR_NO_HIERARCHY

    struct tsr_config:
        uint32_t self_tgid
        uint32_t memcg_hierarchy
        uint32_t wild_mask
        uint32_t wakeup_bytes

    struct tsr_prefix_key:
        uint32_t prefixlen
        char data[1]

    struct tsr_task:
        uint64_t ts_ns
        uint64_t start_ns
        uint64_t cgroup_id
        uint32_t pid
        uint32_t tid
        uint32_t ppid
        uint32_t uid
        uint32_t gid
        uint32_t euid
        uint32_t auid
        uint32_t pidns
        uint32_t mntns
        char comm[1]
        char memcg[1]

    struct tsr_hdr:
        uint16_t kind
        uint16_t flags
        uint32_t size
        tsr_task task

    struct tsr_exec:
        tsr_hdr h
        uint32_t argc
        uint32_t path_len
        uint32_t args_len
        char data[1]

    struct tsr_exit:
        tsr_hdr h
        uint32_t exit_code

    struct tsr_open:
        tsr_hdr h
        int32_t result
        uint32_t flags
        uint32_t path_len
        char path[1]

    struct tsr_net:
        tsr_hdr h
        int32_t result
        uint16_t family
        uint16_t protocol
        uint16_t sport
        uint16_t dport
        uint32_t payload_len
        uint8_t saddr[16]
        uint8_t daddr[16]
        uint8_t payload[1]

    struct tsr_cgroup:
        tsr_hdr h
        uint64_t id
        uint32_t root
        uint32_t path_len
        char path[1]

cdef enum:
    AF_INET = 2
    AF_INET6 = 10
    O_ACCMODE = 3
    O_CREAT = 0o100
    O_TRUNC = 0o1000
    STOP = -125   # -ECANCELED from the callback: batch full, stop consuming

# Names of the kernel's per-CPU counters, in enum tsr_counter order.
COUNTER_NAMES = ("lost", "filtered", "events", "self_filtered", "path_truncated")

cdef str _EVENT = "event"
cdef str _SUCCESS = "success"
cdef str _FAILURE = "failure"
cdef str _UNKNOWN = "unknown"
cdef str _TCP = "tcp"
cdef str _UDP = "udp"
cdef str _IPV4 = "ipv4"
cdef str _IPV6 = "ipv6"
cdef dict _CATS = {a: (c, t) for a, (c, t) in ecs.CATEGORIES.items()}


cdef inline str _cstr(const char *p, size_t cap):
    """Decode a NUL-terminated kernel string of capacity cap."""
    return p[:strnlen(p, cap)].decode("utf-8", "replace")


cdef inline str _ip(uint16_t family, const uint8_t *addr):
    cdef char buf[64]
    if inet_ntop(AF_INET6 if family == AF_INET6 else AF_INET, addr, buf, 64) == NULL:
        return ""
    return buf.decode("ascii")


cdef str _dns_qname(const uint8_t *p, uint32_t n):
    """The first question's name of a DNS query payload, or None if not decodable."""
    cdef char out[256]
    cdef uint32_t i = 12
    cdef int o = 0
    cdef uint8_t l
    if n < 13:
        return None
    while i < n:
        l = p[i]
        if l == 0:
            return out[:o].decode("ascii", "replace")
        if l & 0xC0 or i + 1 + l > n or o + l + 1 > 254:
            return None
        if o:
            out[o] = b"."
            o += 1
        memcpy(out + o, p + i + 1, l)
        o += l
        i += 1 + l
    return None


cdef class BpfProbe:
    """Owner of the libbpf object, its links and the ring-buffer reader."""

    cdef bpf_object *obj
    cdef ring_buffer *rb
    cdef list links          # bpf_link pointers as ints
    cdef int counters_fd
    cdef int config_fd
    cdef int prefixes_fd
    cdef int epfd
    cdef int ncpu
    cdef long long offset_ns
    cdef list batch
    cdef Py_ssize_t max_events
    cdef public unsigned long long decode_errors
    cdef readonly list attached

    def __cinit__(self):
        self.obj = NULL
        self.rb = NULL
        self.links = []
        self.attached = []
        self.batch = []

    def __init__(self, bytes path, unsigned int ring_bytes, optional=()):
        """Open path, size the ring to ring_bytes (a power of two), load and attach all."""
        cdef bpf_program *prog = NULL
        cdef bpf_link *link
        cdef bpf_map *m
        ts_log_reset()
        self.obj = <bpf_object *>check_ptr(bpf_object__open_file(path, NULL),
                                           f"opening {path.decode()}", self._log())
        m = <bpf_map *>check_ptr(bpf_object__find_map_by_name(self.obj, b"ts_events"),
                                 "finding map ts_events")
        check_rc(bpf_map__set_max_entries(m, ring_bytes), "sizing the ring buffer")
        check_rc(bpf_object__load(self.obj), "loading the BPF programs", self._log())
        self.counters_fd = self._map_fd(b"ts_counters")
        self.config_fd = self._map_fd(b"ts_config")
        self.prefixes_fd = self._map_fd(b"ts_prefixes")
        self.ncpu = check_rc(libbpf_num_possible_cpus(), "counting CPUs")
        while True:
            prog = bpf_object__next_program(self.obj, prog)
            if prog == NULL:
                break
            name = bpf_program__name(prog).decode()
            link = bpf_program__attach(prog)
            if link == NULL:
                if name in optional:
                    continue   # e.g. no open(2) on this architecture
                check_ptr(link, f"attaching program {name}", self._log())
            self.links.append(<size_t>link)
            self.attached.append(name)
        self.rb = <ring_buffer *>check_ptr(
            ring_buffer__new(self._map_fd(b"ts_events"), _on_sample, <void *>self, NULL),
            "creating the ring-buffer reader")
        self.epfd = ring_buffer__epoll_fd(self.rb)

    cdef int _map_fd(self, const char *name) except -1:
        cdef bpf_map *m = <bpf_map *>check_ptr(bpf_object__find_map_by_name(self.obj, name),
                                               f"finding map {name.decode()}")
        return check_rc(bpf_map__fd(m), f"map {name.decode()} fd")

    cdef str _log(self):
        tail = ts_log_tail(3000).decode("utf-8", "replace").strip()
        return f"libbpf log (tail):\n{tail}" if tail else None

    def set_config(self, uint32_t self_tgid, memcg_hierarchy, uint32_t wild_mask,
                   uint32_t wakeup_bytes=0):
        cdef uint32_t key = 0
        cdef tsr_config cfg
        memset(&cfg, 0, sizeof(cfg))
        cfg.self_tgid = self_tgid
        cfg.memcg_hierarchy = TSR_NO_HIERARCHY if memcg_hierarchy is None else memcg_hierarchy
        cfg.wild_mask = wild_mask
        cfg.wakeup_bytes = wakeup_bytes
        self._check_open()
        check_rc(bpf_map_update_elem(self.config_fd, &key, &cfg, 0), "updating config map")

    cdef int _prefix_key(self, bytes prefix, tsr_prefix_key *k) except -1:
        cdef Py_ssize_t n = len(prefix)
        if n == 0 or n > TSR_PREFIX_MAX:
            raise ValueError(f"prefix must be 1..{TSR_PREFIX_MAX} bytes: {prefix!r}")
        memset(k, 0, sizeof(tsr_prefix_key))
        k.prefixlen = <uint32_t>(n * 8)
        memcpy(k.data, <const char *>prefix, n)
        return 0

    def prefix_add(self, bytes prefix):
        cdef tsr_prefix_key k
        cdef uint8_t one = 1
        self._check_open()
        self._prefix_key(prefix, &k)
        check_rc(bpf_map_update_elem(self.prefixes_fd, &k, &one, 0), f"adding prefix {prefix!r}")

    def prefix_delete(self, bytes prefix):
        cdef tsr_prefix_key k
        self._check_open()
        self._prefix_key(prefix, &k)
        rc = bpf_map_delete_elem(self.prefixes_fd, &k)
        if rc < 0 and rc != -2:   # ENOENT: already gone
            check_rc(rc, f"removing prefix {prefix!r}")

    def counters(self):
        """Kernel counters summed over CPUs, in COUNTER_NAMES order."""
        cdef uint64_t *vals
        cdef uint32_t i
        cdef int c
        self._check_open()
        vals = <uint64_t *>malloc(sizeof(uint64_t) * self.ncpu)
        if vals == NULL:
            raise MemoryError()
        out = []
        try:
            for i in range(TSR_C_MAX):
                check_rc(bpf_map_lookup_elem(self.counters_fd, &i, vals), "reading counters")
                total = 0
                for c in range(self.ncpu):
                    total += vals[c]
                out.append(total)
        finally:
            free(vals)
        return out

    def fileno(self):
        self._check_open()
        return self.epfd

    def poll(self, int timeout_ms=100, Py_ssize_t max_events=4096):
        """Up to max_events decoded records; when none is ready, waits up to timeout_ms for
        a wakeup, then takes what is pending (batched wakeups may not have signalled)."""
        cdef int rc, n
        cdef epoll_event ev
        self._check_open()
        self.batch = []
        self.max_events = max_events if max_events > 0 else 1
        self.offset_ns = ts_clock_offset_ns()
        rc = self._consume()
        if rc == 0 and timeout_ms != 0:
            with nogil:
                n = epoll_wait(self.epfd, &ev, 1, timeout_ms)
            self.offset_ns = ts_clock_offset_ns()
            rc = self._consume()
        if rc < 0 and rc != STOP:
            check_rc(rc, "consuming the ring buffer")
        batch = self.batch
        self.batch = []
        return batch

    cdef int _consume(self):
        """One ring_buffer__consume, with the cyclic GC paused: the growing batch's dicts
        and lists (which hold no cycles) would otherwise be scanned and promoted again and
        again, about a third of the decode cost. Paused only here, never across a wait."""
        cdef int rc
        cdef bint was = gc.isenabled()
        if was:
            gc.disable()
        rc = ring_buffer__consume(self.rb)
        if was:
            gc.enable()
        return rc

    cdef _check_open(self):
        if self.obj == NULL:
            from threatseer.native.errors import ProbeError
            raise ProbeError(9, "probe is closed")

    def close(self):
        if self.rb != NULL:
            ring_buffer__free(self.rb)
            self.rb = NULL
        for link in self.links:
            bpf_link__destroy(<bpf_link *><size_t>link)
        self.links = []
        if self.obj != NULL:
            bpf_object__close(self.obj)
            self.obj = NULL

    def __dealloc__(self):
        self.close()

    # -- decoding -------------------------------------------------------------------------

    cdef dict _common(self, const tsr_hdr *h, str action):
        cdef char ts[40]
        cdef int n = ts_iso8601(<unsigned long long>(<long long>h.task.ts_ns + self.offset_ns), ts)
        cdef const tsr_task *t = &h.task
        cat, typ = _CATS[action]
        return {
            "@timestamp": ts[:n].decode("ascii"),
            "event.kind": _EVENT,
            "event.category": list(cat),
            "event.type": list(typ),
            "event.action": action,
            "process.pid": t.pid,
            "process.thread.id": t.tid,
            "process.name": _cstr(t.comm, TSR_COMM_LEN),
            "process.parent.pid": t.ppid,
            "user.id": t.uid,
            "group.id": t.gid,
            "user.effective.id": t.euid,
            "user.audit.id": t.auid,
            "threatseer.cgroup.id": t.cgroup_id,
            "threatseer.cgroup.memory": _cstr(t.memcg, TSR_MEMCG_LEN),
            "threatseer.ns.pid": t.pidns,
            "threatseer.ns.mnt": t.mntns,
            "threatseer.process.start_ns": t.start_ns,
        }

    cdef dict _decode(self, const uint8_t *data, size_t size):
        cdef const tsr_hdr *h = <const tsr_hdr *>data
        cdef uint16_t kind = h.kind
        if size < sizeof(tsr_hdr) or h.size > size:
            raise ValueError("short record")
        if kind == TSR_EXEC:
            return self._exec(<const tsr_exec *>data)
        if kind == TSR_FORK:
            return self._common(h, ecs.FORK)
        if kind == TSR_EXIT:
            return self._exit(<const tsr_exit *>data)
        if kind == TSR_OPEN:
            return self._open(<const tsr_open *>data)
        if kind == TSR_CONNECT or kind == TSR_ACCEPT or kind == TSR_LISTEN or kind == TSR_DNS:
            return self._net(<const tsr_net *>data)
        if kind == TSR_CGROUP_MKDIR or kind == TSR_CGROUP_RMDIR:
            return self._cgroup(<const tsr_cgroup *>data)
        raise ValueError(f"unknown record kind {kind}")

    cdef dict _exec(self, const tsr_exec *e):
        cdef dict d = self._common(&e.h, ecs.EXEC)
        cdef uint32_t plen = e.path_len
        cdef const char *a = e.data + plen
        cdef uint32_t alen = e.args_len
        cdef uint32_t i = 0, j
        cdef list args = []
        d["process.executable"] = e.data[:strnlen(e.data, plen)].decode("utf-8", "replace")
        while i < alen and len(args) < TSR_ARGS_MAXCOUNT:
            j = i
            while j < alen and a[j] != 0:
                j += 1
            args.append(a[i:j].decode("utf-8", "replace"))
            i = j + 1
        d["process.args"] = args
        d["process.args_count"] = e.argc
        d["threatseer.args_truncated"] = bool(e.h.flags & TSR_F_ARGS_TRUNC) or e.argc > len(args)
        return d

    cdef dict _exit(self, const tsr_exit *e):
        cdef dict d = self._common(&e.h, ecs.EXIT)
        cdef uint32_t sig = e.exit_code & 0x7f
        if sig:
            d["process.exit_code"] = 128 + sig
            d["threatseer.exit_signal"] = sig
        else:
            d["process.exit_code"] = (e.exit_code >> 8) & 0xff
        return d

    cdef dict _open(self, const tsr_open *o):
        cdef dict d = self._common(&o.h, ecs.OPEN)
        cdef uint32_t acc = o.flags & O_ACCMODE
        cdef list flags = []
        d["file.path"] = o.path[:strnlen(o.path, o.path_len)].decode("utf-8", "replace")
        if acc == 0 or acc == 2:
            flags.append("read")
        if acc == 1 or acc == 2:
            flags.append("write")
        if o.flags & O_CREAT:
            flags.append("create")
        if o.flags & O_TRUNC:
            flags.append("truncate")
        d["threatseer.open.flags"] = flags
        d["threatseer.open.result"] = o.result
        d["event.outcome"] = _SUCCESS if o.result >= 0 else _FAILURE
        return d

    cdef dict _net(self, const tsr_net *n):
        cdef uint16_t kind = n.h.kind
        cdef dict d
        if kind == TSR_CONNECT:
            d = self._common(&n.h, ecs.CONNECT)
            d["network.direction"] = "egress"
            # -EINPROGRESS (non-blocking connect): not yet known
            d["event.outcome"] = (_SUCCESS if n.result == 0 else
                                  _UNKNOWN if n.result == -115 else _FAILURE)
        elif kind == TSR_ACCEPT:
            d = self._common(&n.h, ecs.ACCEPT)
            d["network.direction"] = "ingress"
        elif kind == TSR_LISTEN:
            d = self._common(&n.h, ecs.LISTEN)
            d["network.direction"] = "listening"
        else:
            d = self._common(&n.h, ecs.DNS_QUERY)
            d["network.protocol"] = "dns"
            d["network.direction"] = "egress"
            name = _dns_qname(n.payload, n.payload_len)
            if name is not None:
                d["dns.question.name"] = name
        if kind != TSR_LISTEN and (kind != TSR_DNS or n.sport):
            d["source.ip"] = _ip(n.family, n.saddr)
            d["source.port"] = n.sport
        d["destination.ip"] = _ip(n.family, n.daddr)
        d["destination.port"] = n.dport
        d["network.transport"] = _UDP if kind == TSR_DNS else _TCP
        d["network.type"] = _IPV6 if n.family == AF_INET6 else _IPV4
        return d

    cdef dict _cgroup(self, const tsr_cgroup *c):
        cdef dict d = self._common(
            &c.h, ecs.CONTAINER_CREATED if c.h.kind == TSR_CGROUP_MKDIR else ecs.CONTAINER_DESTROYED)
        path = c.path[:strnlen(c.path, c.path_len)].decode("utf-8", "replace")
        d["threatseer.cgroup.path"] = path
        d["threatseer.cgroup.memory"] = path[path.rfind("/") + 1:]  # no [-1]: wraparound off
        d["threatseer.cgroup.hierarchy"] = c.root
        return d


cdef int _on_sample(void *ctx, void *data, size_t size) noexcept with gil:
    """libbpf's per-record callback, in C: decode into the current batch."""
    cdef BpfProbe self = <BpfProbe>ctx
    try:
        self.batch.append(self._decode(<const uint8_t *>data, size))
    except Exception:
        self.decode_errors += 1
    if len(self.batch) >= self.max_events:
        return STOP
    return 0
