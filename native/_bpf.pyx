# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The hot path: load/attach threatseer.bpf.o, poll its ring buffer, decode records in C.

One Python-level call (:meth:`BpfProbe.poll`) drains up to ``max_events`` records through
ONE ``ring_buffer__consume`` call; libbpf invokes :func:`_on_sample` (a C function) per
record, which builds the flat ECS dict directly with interned key strings. No Python
callback per event. The record layouts come from native/include/records.h, shared with the
BPF programs.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

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

    /* glibc keeps freed heap; elsewhere there is nothing to give back this way. */
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int ts_trim_heap(void) { return malloc_trim(0); }
    #else
    static int ts_trim_heap(void) { return 0; }
    #endif
    """
    int ts_trim_heap()
    void ts_log_reset()
    const char *ts_log_tail(size_t n)
    long long ts_clock_offset_ns()
    int ts_iso8601(unsigned long long wall_ns, char *out)

cdef extern from "Python.h":
    # Presized: an event gets ~35 fields between here and the wire; a dict made for the 18
    # common ones was resized (all entries rehashed) on the way, once per event.
    dict _PyDict_NewPresized(Py_ssize_t minused)

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
        TSR_FCHANGE
        TSR_CRED
        TSR_SYS
        TSR_OP_CREATE
        TSR_OP_WRITE_OPEN
        TSR_OP_TRUNC_OPEN
        TSR_OP_PROC_MEM
        TSR_OP_UNLINK
        TSR_OP_RMDIR
        TSR_OP_RENAME
        TSR_OP_LINK
        TSR_OP_SYMLINK
        TSR_OP_MKDIR
        TSR_OP_CHMOD
        TSR_OP_CHOWN
        TSR_OP_UTIMES
        TSR_OP_SETXATTR
        TSR_OP_TRUNCATE
        TSR_OP_SETUID
        TSR_OP_SETFSUID
        TSR_OP_SETGID
        TSR_OP_SETFSGID
        TSR_OP_CAPSET
        TSR_OP_PTRACE
        TSR_OP_VM_WRITE
        TSR_OP_MEMFD
        TSR_OP_INIT_MODULE
        TSR_OP_FINIT_MODULE
        TSR_OP_BPF_LOAD
        TSR_OP_SET_NAME
        TSR_OP_MOUNT
        TSR_OP_MOVE_MOUNT
        TSR_OP_UNSHARE
        TSR_OP_SETNS
        TSR_W_LOG
        TSR_W_SETID
        TSR_F_EXE_DELETED
        TSR_F_EXE_MEMFD
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
        uint32_t watch_wild_mask

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

    struct tsr_fchange:
        tsr_hdr h
        int32_t result
        uint16_t op
        uint16_t klass
        uint32_t mode
        uint32_t flags
        uint32_t uid
        uint32_t gid
        int64_t mtime_sec
        uint32_t mtime_nsec
        uint32_t mtime_set
        int64_t size
        uint32_t xvalue_len
        uint8_t xvalue[24]
        uint32_t path_len
        uint32_t path2_len
        char data[1]

    struct tsr_cred:
        tsr_hdr h
        int32_t result
        uint16_t op
        uint32_t before[8]
        uint32_t after[8]
        uint64_t cap_eff[2]
        uint64_t cap_perm[2]

    struct tsr_sys:
        tsr_hdr h
        int64_t result
        uint16_t op
        uint64_t arg[4]
        uint32_t len[3]
        char data[1]

cdef enum:
    AF_INET = 2
    AF_INET6 = 10
    O_ACCMODE = 3
    O_CREAT = 0o100
    O_TRUNC = 0o1000
    STOP = -125   # -ECANCELED from the callback: batch full, stop consuming
    BPF_MAP_TYPE_PROG_ARRAY = 3

# Names of the kernel's per-CPU counters, in enum tsr_counter order.
COUNTER_NAMES = ("lost", "filtered", "events", "self_filtered", "path_truncated",
                 "change_filtered", "priv_filtered")

cdef str _EVENT = "event"
cdef str _SUCCESS = "success"
cdef str _FAILURE = "failure"
cdef str _UNKNOWN = "unknown"
cdef str _TCP = "tcp"
cdef str _UDP = "udp"
cdef str _IPV4 = "ipv4"
cdef str _IPV6 = "ipv6"
cdef dict _CATS = {a: (c, t) for a, (c, t) in ecs.CATEGORIES.items()}

# op -> event.action of file changes (truncations under a log prefix become log-truncate)
cdef dict _FILE_ACTIONS = {
    TSR_OP_CREATE: ecs.FILE_CREATE, TSR_OP_WRITE_OPEN: ecs.FILE_WRITE_OPEN,
    TSR_OP_TRUNC_OPEN: ecs.FILE_TRUNCATE, TSR_OP_PROC_MEM: ecs.PROC_MEM_WRITE,
    TSR_OP_UNLINK: ecs.FILE_UNLINK, TSR_OP_RMDIR: ecs.FILE_RMDIR, TSR_OP_RENAME: ecs.FILE_RENAME,
    TSR_OP_LINK: ecs.FILE_LINK, TSR_OP_SYMLINK: ecs.FILE_SYMLINK, TSR_OP_MKDIR: ecs.FILE_MKDIR,
    TSR_OP_CHMOD: ecs.FILE_CHMOD, TSR_OP_CHOWN: ecs.FILE_CHOWN, TSR_OP_UTIMES: ecs.FILE_UTIMES,
    TSR_OP_SETXATTR: ecs.FILE_SETXATTR, TSR_OP_TRUNCATE: ecs.FILE_TRUNCATE,
}
# cred ops in enum order from TSR_OP_SETUID
cdef tuple _CRED_SYSCALLS = ("setuid", "setreuid", "setresuid", "setfsuid", "setgid", "setregid",
                             "setresgid", "setfsgid", "capset")
cdef tuple _CRED_IDS = ("uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid")
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
cdef dict _PTRACE_REQUESTS = {
    4: "poketext", 5: "pokedata", 6: "pokeuser", 13: "setregs", 15: "setfpregs",
    16: "attach", 0x4205: "setregset", 0x4206: "seize",
}
cdef tuple _NS_FLAGS = ((0x00020000, "mnt"), (0x04000000, "uts"), (0x08000000, "ipc"),
                        (0x10000000, "user"), (0x20000000, "pid"), (0x40000000, "net"),
                        (0x02000000, "cgroup"), (0x00000080, "time"))
cdef tuple _MEMFD_FLAGS = ((1, "cloexec"), (2, "allow-sealing"), (4, "hugetlb"),
                           (8, "noexec-seal"), (0x10, "exec"))
cdef dict _BPF_PROG_TYPES = {
    1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint", 6: "xdp",
    7: "perf_event", 8: "cgroup_skb", 9: "cgroup_sock", 13: "sock_ops", 17: "raw_tracepoint",
    26: "tracing", 29: "lsm", 31: "syscall",
}


cdef list _cap_names(uint64_t mask):
    cdef list out = []
    cdef int i
    for i in range(64):
        if mask & (<uint64_t>1 << i):
            out.append(CAPABILITIES[i] if i < len(CAPABILITIES) else f"CAP_{i}")
    return out


cdef list _flag_names(uint64_t value, tuple table):
    return [name for bit, name in table if value & bit]


cdef inline str _mode(uint32_t mode):
    return f"{mode & 0o7777:04o}"


cdef list _exec_flags(uint16_t hflags, const char *path, uint32_t n):
    """Fileless / odd-place executables: memfd, deleted, tmp, dev-shm, hidden-dir."""
    cdef list out = []
    cdef uint32_t i, last = 0
    if hflags & TSR_F_EXE_MEMFD:
        out.append("memfd")
    elif hflags & TSR_F_EXE_DELETED:
        out.append("deleted")
    if (n >= 5 and memcmp(path, b"/tmp/", 5) == 0) or (n >= 9 and memcmp(path, b"/var/tmp/", 9) == 0):
        out.append("tmp")
    elif n >= 9 and memcmp(path, b"/dev/shm/", 9) == 0:
        out.append("dev-shm")
    for i in range(n):
        if path[i] == b"/":
            last = i
    for i in range(last):   # a directory component (not the file itself) starting with '.'
        if path[i] == b"/" and path[i + 1] == b"." and not (
                path[i + 2] == b"/" or (path[i + 2] == b"." and path[i + 3] == b"/")):
            out.append("hidden-dir")
            break
    return out


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


cdef enum:
    EVENT_FIELDS = 40  # fields an enriched event may reach without a resize


def trim_heap():
    """Give the free heap back to the kernel (glibc ``malloc_trim``); 1 if some was. Here, not
    through ctypes, which costs the sensor 0.4 MiB of RSS to import for this one call."""
    return ts_trim_heap()


cdef class BpfProbe:
    """Owner of the libbpf object, its links and the ring-buffer reader."""

    cdef bpf_object *obj
    cdef ring_buffer *rb
    cdef list links          # bpf_link pointers as ints
    cdef int counters_fd
    cdef int config_fd
    cdef int prefixes_fd
    cdef int watched_fd
    cdef int epfd
    cdef int ncpu
    cdef long long offset_ns
    cdef list batch
    cdef Py_ssize_t max_events
    cdef public unsigned long long decode_errors
    # The acting task's fields as Python objects, kept from the previous record: a stream of
    # records from one task (the usual case) reuses them instead of allocating ten ints and
    # decoding two strings per record.
    cdef tsr_task last_task
    cdef bint have_last_task
    cdef object t_pid, t_tid, t_ppid, t_uid, t_gid, t_euid, t_auid, t_cgroup, t_pidns
    cdef object t_mntns, t_start, t_comm, t_memcg
    cdef readonly list attached

    def __cinit__(self):
        self.obj = NULL
        self.rb = NULL
        self.links = []
        self.attached = []
        self.batch = []

    def __init__(self, bytes path, unsigned int ring_bytes, optional=(), skip=(), enable=()):
        """Open path, size the ring to ring_bytes (a power of two), load and attach all
        programs but those in skip (tail-call targets); those in optional may fail to
        attach (tracepoints this kernel lacks); those in enable are programs the object
        does not load by default (SEC("?...")) that are wanted."""
        cdef bpf_program *prog = NULL
        cdef bpf_link *link
        cdef bpf_map *m
        ts_log_reset()
        self.obj = <bpf_object *>check_ptr(bpf_object__open_file(path, NULL),
                                           f"opening {path.decode()}", self._log())
        m = <bpf_map *>check_ptr(bpf_object__find_map_by_name(self.obj, b"ts_events"),
                                 "finding map ts_events")
        check_rc(bpf_map__set_max_entries(m, ring_bytes), "sizing the ring buffer")
        for name in enable:
            prog = bpf_object__find_program_by_name(self.obj, name.encode())
            if prog != NULL:
                bpf_program__set_autoload(prog, True)
        prog = NULL
        check_rc(bpf_object__load(self.obj), "loading the BPF programs", self._log())
        self.counters_fd = self._map_fd(b"ts_counters")
        self.config_fd = self._map_fd(b"ts_config")
        self.prefixes_fd = self._map_fd(b"ts_prefixes")
        self.watched_fd = self._map_fd(b"ts_watched")
        self.ncpu = check_rc(libbpf_num_possible_cpus(), "counting CPUs")
        while True:
            prog = bpf_object__next_program(self.obj, prog)
            if prog == NULL:
                break
            name = bpf_program__name(prog).decode()
            if name in skip or not bpf_program__autoload(prog):
                continue
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
                   uint32_t wakeup_bytes=0, uint32_t watch_wild_mask=0):
        cdef uint32_t key = 0
        cdef tsr_config cfg
        memset(&cfg, 0, sizeof(cfg))
        cfg.self_tgid = self_tgid
        cfg.memcg_hierarchy = TSR_NO_HIERARCHY if memcg_hierarchy is None else memcg_hierarchy
        cfg.wild_mask = wild_mask
        cfg.wakeup_bytes = wakeup_bytes
        cfg.watch_wild_mask = watch_wild_mask
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

    def prefix_add(self, bytes prefix, bint watched=False, uint8_t value=1):
        """Add prefix to the sensitive-open trie, or (watched) the file-change trie with
        value's TSR_W_* bits."""
        cdef tsr_prefix_key k
        self._check_open()
        self._prefix_key(prefix, &k)
        check_rc(bpf_map_update_elem(self.watched_fd if watched else self.prefixes_fd, &k,
                                     &value, 0), f"adding prefix {prefix!r}")

    def prefix_delete(self, bytes prefix, bint watched=False):
        cdef tsr_prefix_key k
        self._check_open()
        self._prefix_key(prefix, &k)
        rc = bpf_map_delete_elem(self.watched_fd if watched else self.prefixes_fd, &k)
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
        cdef bpf_map *m = NULL
        cdef uint32_t key
        if self.rb != NULL:
            ring_buffer__free(self.rb)
            self.rb = NULL
        pending, self.links = self.links, []
        if len(pending) > 8:
            # each tracepoint detach waits for an RCU grace period in the kernel (~75 ms;
            # ~120 links took 9 s one by one): from several threads they overlap (~5 s)
            try:
                from concurrent.futures import ThreadPoolExecutor
                with ThreadPoolExecutor(max_workers=16) as pool:
                    for i in range(len(pending)):
                        pool.submit(_destroy_link, pending, i)
            except Exception:
                pass   # e.g. interpreter shutdown: no new threads; finish below
        for link in pending:
            if link:
                bpf_link__destroy(<bpf_link *><size_t>link)
        if self.obj != NULL:
            # empty the tail-call arrays now: the kernel releases a closed array's programs
            # from a work queue, later, and the sensor's programs would outlive it a moment
            while True:
                m = bpf_object__next_map(self.obj, m)
                if m == NULL:
                    break
                if bpf_map__type(m) == BPF_MAP_TYPE_PROG_ARRAY and bpf_map__fd(m) >= 0:
                    for key in range(bpf_map__max_entries(m)):
                        bpf_map_delete_elem(bpf_map__fd(m), &key)
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
        if not self.have_last_task or memcmp(
                &t.start_ns, &self.last_task.start_ns, sizeof(tsr_task) - sizeof(t.ts_ns)) != 0:
            self.last_task = t[0]
            self.have_last_task = True
            self.t_pid, self.t_tid, self.t_ppid = t.pid, t.tid, t.ppid
            self.t_uid, self.t_gid, self.t_euid, self.t_auid = t.uid, t.gid, t.euid, t.auid
            self.t_cgroup, self.t_pidns, self.t_mntns = t.cgroup_id, t.pidns, t.mntns
            self.t_start = t.start_ns
            self.t_comm = _cstr(t.comm, TSR_COMM_LEN)
            self.t_memcg = _cstr(t.memcg, TSR_MEMCG_LEN)
        cdef dict d = _PyDict_NewPresized(EVENT_FIELDS)
        d["@timestamp"] = ts[:n].decode("ascii")
        d["event.kind"] = _EVENT
        # One list per action, shared by its events (as ecs.CATEGORIES' are by synthetic
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
        d["user.audit.id"] = self.t_auid
        d["threatseer.cgroup.id"] = self.t_cgroup
        d["threatseer.cgroup.memory"] = self.t_memcg
        d["threatseer.ns.pid"] = self.t_pidns
        d["threatseer.ns.mnt"] = self.t_mntns
        d["threatseer.process.start_ns"] = self.t_start
        return d

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
        if kind == TSR_FCHANGE:
            return self._fchange(<const tsr_fchange *>data)
        if kind == TSR_CRED:
            return self._cred(<const tsr_cred *>data)
        if kind == TSR_SYS:
            return self._sys(<const tsr_sys *>data)
        raise ValueError(f"unknown record kind {kind}")

    cdef dict _exec(self, const tsr_exec *e):
        cdef dict d = self._common(&e.h, ecs.EXEC)
        cdef uint32_t plen = e.path_len
        cdef const char *a = e.data + plen
        cdef uint32_t alen = e.args_len
        cdef uint32_t i = 0, j
        cdef list args = []
        cdef size_t exe_len = strnlen(e.data, plen)
        d["process.executable"] = e.data[:exe_len].decode("utf-8", "replace")
        d["threatseer.exec.flags"] = _exec_flags(e.h.flags, e.data, exe_len)
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
        d["file.path"] = o.path[:strnlen(o.path, o.path_len)].decode("utf-8", "replace")
        d["threatseer.open.flags"] = _open_flags(o.flags)
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

    cdef str _iso(self, int64_t sec, uint32_t nsec):
        cdef char ts[40]
        cdef int n = ts_iso8601(<unsigned long long>(sec * 1000000000LL + nsec), ts)
        return ts[:n].decode("ascii")

    cdef dict _fchange(self, const tsr_fchange *fc):
        cdef uint16_t op = fc.op
        cdef bint log = (fc.klass & TSR_W_LOG) != 0
        action = _FILE_ACTIONS.get(op)
        if action is None:
            raise ValueError(f"unknown file op {op}")
        if log and (op == TSR_OP_TRUNC_OPEN or (op == TSR_OP_TRUNCATE and fc.size == 0)):
            action = ecs.LOG_TRUNCATE
        cdef dict d = self._common(&fc.h, action)
        path = _str_at(fc.data, fc.path_len)
        d["file.path"] = path
        if fc.path2_len:
            d["file.target_path"] = _str_at(fc.data + fc.path_len, fc.path2_len)
        d["event.outcome"] = _SUCCESS if fc.result >= 0 else _FAILURE
        d["threatseer.file.result"] = fc.result
        if fc.h.flags & TSR_F_PATH_TRUNC:
            d["threatseer.path_truncated"] = True
        if op <= TSR_OP_PROC_MEM:       # opens: mode from the inode, the open's intent
            d["threatseer.open.flags"] = _open_flags(fc.flags)
        if op <= TSR_OP_PROC_MEM or op == TSR_OP_CHMOD or op == TSR_OP_MKDIR:
            d["file.mode"] = _mode(fc.mode)
            d["threatseer.file.setuid"] = (fc.mode & 0o4000) != 0
            d["threatseer.file.setgid"] = (fc.mode & 0o2000) != 0
        if op == TSR_OP_PROC_MEM:
            parts = path.split("/")
            if len(parts) > 2 and parts[2].isdigit():
                d["process.target.pid"] = int(parts[2])
        elif op == TSR_OP_CHOWN:
            if fc.uid != 0xFFFFFFFF:
                d["file.uid"] = str(fc.uid)
            if fc.gid != 0xFFFFFFFF:
                d["file.gid"] = str(fc.gid)
        elif op == TSR_OP_UTIMES:
            if fc.mtime_set:
                d["file.mtime"] = self._iso(fc.mtime_sec, fc.mtime_nsec)
        elif op == TSR_OP_TRUNCATE:
            d["file.size"] = fc.size
        elif op == TSR_OP_SETXATTR:
            d["threatseer.xattr.name"] = "security.capability"
            self._file_caps(d, fc)
        return d

    cdef _file_caps(self, dict d, const tsr_fchange *fc):
        """Decode a vfs_cap_data value (v2: 20 bytes, v3: 24 with the root uid)."""
        cdef const uint32_t *w = <const uint32_t *>fc.xvalue
        cdef uint32_t n = fc.xvalue_len
        cdef uint32_t rev
        if n < 20:
            return
        rev = w[0] & 0xFF000000
        if rev != 0x02000000 and rev != 0x03000000:
            return
        d["threatseer.xattr.capabilities.permitted"] = _cap_names(
            w[1] | (<uint64_t>w[3] << 32))
        d["threatseer.xattr.capabilities.inheritable"] = _cap_names(
            w[2] | (<uint64_t>w[4] << 32))
        d["threatseer.xattr.capabilities.effective"] = bool(w[0] & 1)

    cdef dict _cred(self, const tsr_cred *r):
        cdef uint16_t op = r.op
        cdef int i
        cdef uint64_t added
        if op < TSR_OP_SETUID or op > TSR_OP_CAPSET:
            raise ValueError(f"unknown cred op {op}")
        action = (ecs.SETUID if op <= TSR_OP_SETFSUID else
                  ecs.SETGID if op <= TSR_OP_SETFSGID else ecs.CAPSET)
        cdef dict d = self._common(&r.h, action)
        d["threatseer.syscall"] = _CRED_SYSCALLS[op - TSR_OP_SETUID]
        d["event.outcome"] = _SUCCESS if r.result >= 0 else _FAILURE
        d["user.id"] = r.before[0]
        d["user.changes.id"] = r.after[0]
        d["user.effective.id"] = r.after[1]
        d["group.id"] = r.before[4]
        d["user.changes.group.id"] = r.after[4]
        for i in range(8):
            d["threatseer.cred.before." + _CRED_IDS[i]] = r.before[i]
            d["threatseer.cred.after." + _CRED_IDS[i]] = r.after[i]
        added = (r.cap_eff[1] & ~r.cap_eff[0]) | (r.cap_perm[1] & ~r.cap_perm[0])
        d["threatseer.capabilities.added"] = _cap_names(added)
        d["process.thread.capabilities.effective"] = _cap_names(r.cap_eff[1])
        d["process.thread.capabilities.permitted"] = _cap_names(r.cap_perm[1])
        return d

    cdef dict _sys(self, const tsr_sys *r):
        cdef uint16_t op = r.op
        cdef const char *s0 = r.data
        cdef const char *s1 = r.data + r.len[0]
        cdef const char *s2 = r.data + r.len[0] + r.len[1]
        cdef dict d
        if op == TSR_OP_PTRACE:
            d = self._common(&r.h, ecs.PTRACE)
            d["threatseer.ptrace.request"] = _PTRACE_REQUESTS.get(r.arg[0], str(r.arg[0]))
            d["process.target.pid"] = <int32_t>r.arg[1]
        elif op == TSR_OP_VM_WRITE:
            d = self._common(&r.h, ecs.PROCESS_VM_WRITE)
            d["process.target.pid"] = <int32_t>r.arg[0]
            if r.result >= 0:
                d["threatseer.vm_write.bytes"] = r.result
        elif op == TSR_OP_MEMFD:
            d = self._common(&r.h, ecs.MEMFD_CREATE)
            d["file.name"] = _str_at(s0, r.len[0])
            d["threatseer.memfd.flags"] = _flag_names(r.arg[0], _MEMFD_FLAGS)
        elif op == TSR_OP_INIT_MODULE or op == TSR_OP_FINIT_MODULE:
            d = self._common(&r.h, ecs.MODULE_LOAD)
            d["threatseer.syscall"] = "finit_module" if op == TSR_OP_FINIT_MODULE else "init_module"
            if r.len[0]:
                d["file.path"] = _str_at(s0, r.len[0])
            if r.len[1]:
                d["threatseer.module.args"] = _str_at(s1, r.len[1])
        elif op == TSR_OP_BPF_LOAD:
            d = self._common(&r.h, ecs.BPF_LOAD)
            d["threatseer.bpf.prog_type"] = _BPF_PROG_TYPES.get(r.arg[0], str(r.arg[0]))
            d["threatseer.bpf.insn_count"] = r.arg[1]
            d["threatseer.bpf.prog_name"] = _str_at(s0, r.len[0]) if r.len[0] else ""
        elif op == TSR_OP_SET_NAME:
            d = self._common(&r.h, ecs.RENAME_PROCESS)
            d["process.name"] = _str_at(s0, r.len[0])
            d["process.title"] = _str_at(s1, r.len[1])
        elif op == TSR_OP_MOUNT or op == TSR_OP_MOVE_MOUNT:
            d = self._common(&r.h, ecs.MOUNT)
            d["threatseer.syscall"] = "mount" if op == TSR_OP_MOUNT else "move_mount"
            d["threatseer.mount.target"] = _str_at(s0, r.len[0])
            if r.len[1]:
                d["threatseer.mount.source"] = _str_at(s1, r.len[1])
            if r.len[2]:
                d["threatseer.mount.fstype"] = _str_at(s2, r.len[2])
            d["threatseer.mount.flags"] = r.arg[0]
        elif op == TSR_OP_UNSHARE:
            d = self._common(&r.h, ecs.UNSHARE)
            d["threatseer.ns.flags"] = _flag_names(r.arg[0], _NS_FLAGS)
        elif op == TSR_OP_SETNS:
            d = self._common(&r.h, ecs.SETNS)
            d["threatseer.ns.flags"] = _flag_names(r.arg[0], _NS_FLAGS)
            d["threatseer.setns.inode"] = r.arg[1]
        else:
            raise ValueError(f"unknown sys op {op}")
        d["event.outcome"] = _SUCCESS if r.result >= 0 else _FAILURE
        d["threatseer.result"] = r.result
        return d

    cdef dict _cgroup(self, const tsr_cgroup *c):
        cdef dict d = self._common(
            &c.h, ecs.CONTAINER_CREATED if c.h.kind == TSR_CGROUP_MKDIR else ecs.CONTAINER_DESTROYED)
        path = c.path[:strnlen(c.path, c.path_len)].decode("utf-8", "replace")
        d["threatseer.cgroup.path"] = path
        d["threatseer.cgroup.memory"] = path[path.rfind("/") + 1:]  # no [-1]: wraparound off
        d["threatseer.cgroup.hierarchy"] = c.root
        return d


def _destroy_link(list links, Py_ssize_t i):
    """Destroy links[i] and mark it done (0); each index is handled by one task only."""
    cdef size_t link = links[i]
    links[i] = 0
    if link:
        with nogil:
            bpf_link__destroy(<bpf_link *>link)


cdef list _OPEN_FLAGS = [None] * 16  # by access mode and O_CREAT/O_TRUNC: shared lists


cdef list _open_flags(uint32_t f):
    cdef uint32_t key = (f & O_ACCMODE) | (4 if f & O_CREAT else 0) | (8 if f & O_TRUNC else 0)
    cdef list flags = _OPEN_FLAGS[key]
    if flags is None:
        flags = _OPEN_FLAGS[key] = _open_flag_names(f)
    return flags


cdef list _open_flag_names(uint32_t f):
    cdef uint32_t acc = f & O_ACCMODE
    cdef list flags = []
    if acc == 0 or acc == 2:
        flags.append("read")
    if acc == 1 or acc == 2:
        flags.append("write")
    if f & O_CREAT:
        flags.append("create")
    if f & O_TRUNC:
        flags.append("truncate")
    return flags


cdef inline str _str_at(const char *p, uint32_t n):
    return p[:strnlen(p, n)].decode("utf-8", "replace")


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
