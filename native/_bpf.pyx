# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The hot path: load/attach threatseer.bpf.o, poll its ring buffer, decode records in C.

One Python-level call (:meth:`BpfProbe.poll`) drains up to ``max_events`` records through
ONE ``ring_buffer__consume`` call; libbpf invokes :func:`_on_sample` (a C function) per
record, which builds the flat ECS dict directly with interned key strings. No Python
callback per event. The record layouts come from native/include/records.h, shared with the
BPF programs.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.errno cimport errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

# found through cythonize(include_path=["native"]) in setup.py
from checkrc cimport check_ptr, check_rc
from digest cimport *
from libbpf cimport *
from records cimport *

import gc

from threatseer.native import actions, clock

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
    static int ts_fix_mmap_threshold(int nbytes) { return mallopt(M_MMAP_THRESHOLD, nbytes); }
    #else
    static int ts_trim_heap(void) { return 0; }
    static int ts_fix_mmap_threshold(int nbytes) { return 0; }
    #endif
    """
    int ts_trim_heap()
    int ts_fix_mmap_threshold(int nbytes)
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

cdef extern from "<sys/mount.h>" nogil:
    int mount(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data)

cdef extern from "<sys/epoll.h>" nogil:
    struct epoll_event:
        uint32_t events
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


cdef enum:
    AF_INET = 2
    AF_INET6 = 10
    O_ACCMODE = 3
    O_CREAT = 0o100
    O_TRUNC = 0o1000
    STOP = -125   # -ECANCELED from the callback: batch full, stop consuming
    BPF_MAP_TYPE_PROG_ARRAY = 3

# Names of the kernel's per-CPU counters (enum tsr_counter order), and what the prefix
# filters take: from records.h, so that they cannot drift from the kernel side.
COUNTER_NAMES = tuple([tsr_counter_names[i].decode() for i in range(TSR_C_MAX)])
PREFIX_MAX = TSR_PREFIX_MAX
COMM_MAX = TSR_COMM_LEN - 1
KIND_ANY, KIND_MEMFD, KIND_DELETED = TSR_KIND_ANY, TSR_KIND_MEMFD, TSR_KIND_DELETED
W_WATCHED = TSR_W_WATCHED
W_LOG = TSR_W_LOG

include "encode/writer.pxi"
include "encode/context.pxi"
include "decode/decoder.pxi"
include "decode/process.pxi"
include "decode/file.pxi"
include "decode/network.pxi"
include "decode/privilege.pxi"
include "decode/container.pxi"
include "encode/file.pxi"
include "sha256.pxi"
include "syscalls.pxi"


def mount_tracefs(str target):
    """Mount tracefs at ``target`` (mount(2), as ``mount -t tracefs nodev TARGET``); an
    OSError with the errno when the kernel refuses."""
    cdef bytes path = target.encode()
    if mount(b"nodev", path, b"tracefs", 0, NULL) != 0:
        import os
        raise OSError(errno, f"mounting tracefs at {target}: {os.strerror(errno)}")


def trim_heap():
    """Give the free heap back to the kernel (glibc ``malloc_trim``); 1 if some was. Here, not
    through ctypes, which costs the sensor 0.4 MiB of RSS to import for this one call."""
    return ts_trim_heap()


def fix_mmap_threshold(int nbytes):
    """Fix glibc's mmap threshold at ``nbytes``; 1 if set (0 elsewhere than glibc).

    Why: a buffer above the threshold (128 KiB at first) is mapped on its own and unmapped
    when freed, but each such free raises the threshold to that buffer's size. A flood's
    batch bodies (a few hundred KiB before compression) then came from the heap and left it
    ~4.5 MiB bigger: the sensor's peak RSS. Fixed, they stay mapped alone (as the hub does,
    hub/heap.py; here without ctypes, see trim_heap)."""
    return ts_fix_mmap_threshold(nbytes)


cdef class BpfProbe:
    """Owner of the libbpf object, its links and the ring-buffer reader."""

    cdef bpf_object *obj
    cdef ring_buffer *rb
    cdef list links          # bpf_link pointers as ints
    cdef int counters_fd
    cdef int config_fd
    cdef int prefixes_fd
    cdef int watched_fd
    cdef int reader_fd
    cdef int ring_fd
    cdef int enforce_fd
    cdef int deny_fd
    cdef int protected_fd
    cdef uint32_t hold
    cdef int epfd
    cdef int ncpu
    cdef Decoder decoder
    cdef list batch
    cdef Py_ssize_t max_events
    cdef public unsigned long long decode_errors
    cdef public list capture  # a list: every record's bytes are kept in it too (tests)
    cdef list positions      # of the dicts in the last batch, when events are encoded too
    cdef Py_ssize_t run_at   # where the run of encoded events being written goes
    cdef Py_ssize_t n_events # events in the batch (a run holds several)
    cdef readonly list attached

    def __cinit__(self):
        self.obj = NULL
        self.rb = NULL
        self.links = []
        self.attached = []
        self.batch = []
        self.decoder = Decoder()
        self.decoder.w.room = RUN_ROOM_BYTES

    def __init__(self, bytes path, unsigned int ring_bytes, optional=(), skip=(), enable=(),
                 first=()):
        """Open path, size the ring to ring_bytes (a power of two), load and attach all
        programs but those in skip (tail-call targets); those in optional may fail to
        attach (tracepoints this kernel lacks); those in enable are programs the object
        does not load by default (SEC("?...")) that are wanted; those in first are attached
        before the others (programs on one tracepoint run in the order they were attached)."""
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
        self.reader_fd = self._map_fd(b"ts_reader")
        self.ring_fd = self._map_fd(b"ts_events")
        self.enforce_fd = self._map_fd(b"ts_enforce")
        self.deny_fd = self._map_fd(b"ts_exec_deny")
        self.protected_fd = self._map_fd(b"ts_protected")
        self.hold = 0
        self.ncpu = check_rc(libbpf_num_possible_cpus(), "counting CPUs")
        progs = []
        while True:
            prog = bpf_object__next_program(self.obj, prog)
            if prog == NULL:
                break
            name = bpf_program__name(prog).decode()
            if name in skip or not bpf_program__autoload(prog):
                continue
            progs.append((name not in first, len(progs), <size_t>prog))
        for _, _, addr in sorted(progs):
            prog = <bpf_program *><size_t>addr
            name = bpf_program__name(prog).decode()
            link = bpf_program__attach(prog)
            if link == NULL:
                if name in optional:
                    continue   # e.g. no open(2) on this architecture
                check_ptr(link, f"attaching program {name}", self._log())
            self.links.append(<size_t>link)
            self.attached.append(name)
        self.rb = <ring_buffer *>check_ptr(
            ring_buffer__new(self._map_fd(b"ts_events"), <ring_buffer_sample_fn>_on_sample,
                             <void *>self, NULL),
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

    def set_enforce(self, bint enabled, uint32_t max_kills, uint64_t window_ns):
        """Turn in-kernel exec enforcement on or off; at most max_kills per window_ns."""
        cdef uint32_t key = 0
        cdef tsr_enforce_config cfg
        memset(&cfg, 0, sizeof(cfg))
        cfg.enabled = 1 if enabled else 0
        cfg.max_kills = max_kills
        cfg.window_ns = window_ns
        self._check_open()
        check_rc(bpf_map_update_elem(self.enforce_fd, &key, &cfg, 0), "updating ts_enforce")

    def deny_add(self, bytes prefix, uint8_t kill, uint8_t dry, rules):
        """Deny execs under prefix: kill/dry are TSR_KIND_* bits, rules the rule id of each
        kind (any, memfd, deleted)."""
        cdef tsr_prefix_key k
        cdef tsr_deny value
        cdef int i
        self._check_open()
        self._prefix_key(prefix, &k)
        memset(&value, 0, sizeof(value))
        value.kill = kill
        value.dry = dry
        for i in range(TSR_KINDS):
            value.rule[i] = rules[i]
        check_rc(bpf_map_update_elem(self.deny_fd, &k, &value, 0), f"denying {prefix!r}")

    def deny_delete(self, bytes prefix):
        cdef tsr_prefix_key k
        self._check_open()
        self._prefix_key(prefix, &k)
        rc = bpf_map_delete_elem(self.deny_fd, &k)
        if rc < 0 and rc != -2:
            check_rc(rc, f"removing denied prefix {prefix!r}")

    def protect(self, bytes comm, bint on=True):
        """Add (or remove) a process name in-kernel enforcement never kills."""
        cdef char key[TSR_COMM_LEN]
        cdef uint8_t one = 1
        self._check_open()
        if not 0 < len(comm) < TSR_COMM_LEN:
            raise ValueError(f"a process name is 1..{TSR_COMM_LEN - 1} bytes: {comm!r}")
        memset(key, 0, TSR_COMM_LEN)
        memcpy(key, <const char *>comm, len(comm))
        if on:
            check_rc(bpf_map_update_elem(self.protected_fd, key, &one, 0), "protecting")
        else:
            rc = bpf_map_delete_elem(self.protected_fd, key)
            if rc < 0 and rc != -2:
                check_rc(rc, "unprotecting")

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

    def set_identity(self, str id_prefix, unsigned long long next_seq):
        """Stamp every event with event.sequence (from ``next_seq`` on, in kernel order) and
        event.id (``id_prefix`` + the sequence)."""
        self.decoder.id_prefix = id_prefix
        self.decoder.id_prefix_b = id_prefix.encode()
        self.decoder.seq = next_seq - 1 if next_seq else 0
        self.decoder.stamping = True

    def decode_record(self, bytes record, bint encode=True):
        """One record (as ``capture`` kept it) through the decoder: what poll() would have
        given for it (``encode=False``: always the dict)."""
        wrap = self.decoder.wrap
        if not encode:
            self.decoder.wrap = None
        try:
            ev = self.decoder.decode(<const uint8_t *><const char *>record, len(record))
            return self.decoder.take_run() if ev is ENCODED else ev
        finally:
            self.decoder.wrap = wrap

    def polled(self):
        """Events the last poll() returned (a run of encoded ones is one item of them)."""
        return self.n_events

    def dict_positions(self):
        """Where the dicts are in what the last poll() returned (None: it is all dicts)."""
        return self.positions

    def next_sequence(self):
        """The next event.sequence, for an event the caller makes itself."""
        return self.decoder.next_seq()

    def set_encoding(self, wrap):
        """Encode sensitive opens of processes with a registered context straight to
        msgpack; each run of consecutive ones is handed out as ``wrap(bytes, count)`` (the
        maps one after the other); None: always dicts. Needs set_identity first."""
        if wrap is not None and not self.decoder.stamping:
            raise ValueError("set_identity first: encoded events carry their own ids")
        self.decoder.wrap = wrap

    @property
    def contexts(self):
        """The registered contexts (encode/context.pxi): register(), forget(), hits."""
        return self.decoder.contexts

    def ring_fileno(self):
        """The ring buffer map's own fd (pollable: readable while records are pending; its
        wakeups are the kernel's, see emit() in bpf/common.h)."""
        self._check_open()
        return self.ring_fd

    def set_hold(self, bint hold):
        """Tell the programs whether the reader holds a batch on its own timer (no wakeups
        below wakeup_bytes) or waits for the next record. Written only on a change."""
        cdef uint32_t key = 0
        cdef uint32_t value = TSR_READER_HOLD if hold else 0
        self._check_open()
        if value != self.hold:
            check_rc(bpf_map_update_elem(self.reader_fd, &key, &value, 0), "updating ts_reader")
            self.hold = value

    def poll(self, int timeout_ms=100, Py_ssize_t max_events=4096):
        """Up to max_events decoded records; when none is ready, waits up to timeout_ms for
        a wakeup, then takes what is pending (batched wakeups may not have signalled)."""
        cdef int rc, n
        cdef epoll_event ev
        self._check_open()
        self.batch = []
        self.positions = [] if self.decoder.wrap is not None else None
        self.max_events = max_events if max_events > 0 else 1
        self.decoder.offset_ns = ts_clock_offset_ns()
        self.n_events = 0
        rc = self._consume()
        if rc == 0 and timeout_ms != 0:
            with nogil:
                n = epoll_wait(self.epfd, &ev, 1, timeout_ms)
            self.decoder.offset_ns = ts_clock_offset_ns()
            rc = self._consume()
        self._close_run()
        if rc < 0 and rc != STOP:
            check_rc(rc, "consuming the ring buffer")
        batch = self.batch
        self.batch = []
        return batch

    cdef int _close_run(self) except -1:
        """Put the run of encoded events in its place in the batch."""
        run = self.decoder.take_run()
        if run is not None:
            self.batch[self.run_at] = run
        return 0

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


def _destroy_link(list links, Py_ssize_t i):
    """Destroy links[i] and mark it done (0); each index is handled by one task only."""
    cdef size_t link = links[i]
    links[i] = 0
    if link:
        with nogil:
            bpf_link__destroy(<bpf_link *>link)


# A run of encoded events ends once it holds this many bytes: its bytes then stay below the
# sensor's fixed mmap threshold (sensor/daemon.py MMAP_THRESHOLD, 64 KiB) and come from the
# heap. Whole-batch runs (~300 KiB in a flood) were each a fresh mapping whose pages faulted
# in as they were written: ~12% of the sensor's CPU in an open flood. A run starts with room
# for its limit and one more event (RUN_ROOM_BYTES), so that it is never grown: a growth is
# a realloc that copies the run so far (3% of an open flood's CPU when runs grew).
cdef enum:
    RUN_MAX_BYTES = 24 * 1024
    RUN_ROOM_BYTES = RUN_MAX_BYTES + 8 * 1024


cdef int _on_sample(void *ctx, void *data, size_t size) noexcept:
    """libbpf's per-record callback, in C: decode into the current batch.

    Runs with the GIL held: ring_buffer__consume is called only from _consume, which holds
    it (never from a nogil block), so the callback does not take it again per record as a
    ``with gil`` callback would."""
    cdef BpfProbe self = <BpfProbe>ctx
    try:
        if self.capture is not None:
            self.capture.append((<const char *>data)[:size])
        ev = self.decoder.decode(<const uint8_t *>data, size)
        if ev is ENCODED:
            if self.decoder.run_events == 1:  # a new run: its place in the batch
                self.run_at = len(self.batch)
                self.batch.append(None)
            if self.decoder.w.n >= RUN_MAX_BYTES:
                self._close_run()  # the next encoded event starts a new run
        else:
            self._close_run()
            if self.positions is not None:
                self.positions.append(len(self.batch))
            self.batch.append(ev)
        self.n_events += 1
    except Exception:
        self.decode_errors += 1
    if self.n_events >= self.max_events:
        return STOP
    return 0
