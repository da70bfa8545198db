# Included by _bpf.pyx: what the sensor's enrichment adds to a known process's events, kept
# here so that the reader can encode those events itself (encode/file.pxi) without building a
# dict and calling back into Python.
#
# The sensor registers, per process, the msgpack of the fields it would add (context, user
# name) with the uid and memory cgroup they were made for. They stay valid until the process
# table changes in a way that could change them: an exec, fork or exit of the process or of
# its parent. Those records pass through the decoder first, in kernel order, so it bumps a
# generation counter per pid (in GEN_SLOTS slots: two pids sharing a slot only cost a
# needless miss) and an entry is used only while its own and its parent's generation are
# what they were when it was made. What changes without a record (a dead parent leaving the
# sensor's graveyard) is told with forget().

from libc.stdlib cimport calloc

cdef enum:
    CTX_SLOTS = 4096       # entries, direct-mapped by pid
    GEN_SLOTS = 65536      # generation counters, by pid


cdef struct CtxEntry:
    uint32_t pid           # 0: empty
    uint32_t gen
    uint32_t ppid
    uint32_t pgen
    uint32_t ntail         # fields in tail


cdef class Contexts:
    cdef CtxEntry *slots
    cdef uint32_t *gens
    cdef list objs         # per slot: (uid, memcg, tail bytes) of the entry
    cdef public unsigned long long hits, misses

    def __cinit__(self):
        # calloc: pages of zeroes the kernel maps only once they are written (RSS)
        self.slots = <CtxEntry *>calloc(CTX_SLOTS, sizeof(CtxEntry))
        self.gens = <uint32_t *>calloc(GEN_SLOTS, sizeof(uint32_t))
        if self.slots == NULL or self.gens == NULL:
            raise MemoryError()
        self.objs = [None] * CTX_SLOTS

    def __dealloc__(self):
        free(self.slots)
        free(self.gens)

    cdef inline void bump(self, uint32_t pid) noexcept:
        self.gens[pid & (GEN_SLOTS - 1)] += 1

    cdef tuple lookup(self, uint32_t pid, uint32_t ppid_now, object uid, object memcg):
        """(uid, memcg, tail) of a valid entry for pid, else None."""
        cdef CtxEntry *e = &self.slots[pid & (CTX_SLOTS - 1)]
        if (e.pid != pid or self.gens[pid & (GEN_SLOTS - 1)] != e.gen
                or self.gens[e.ppid & (GEN_SLOTS - 1)] != e.pgen):
            self.misses += 1
            return None
        cdef tuple obj = <tuple>self.objs[pid & (CTX_SLOTS - 1)]
        if obj[0] != uid or obj[1] != memcg:
            self.misses += 1
            return None
        self.hits += 1
        return obj

    def register(self, uint32_t pid, uint32_t ppid, str uid, str memcg, bytes tail,
                 uint32_t ntail):
        """The fields (``ntail`` msgpack key/value pairs) the sensor adds to events of
        ``pid`` (table parent ``ppid``) run by ``uid`` in memory cgroup ``memcg``, valid from
        now until the process or its parent changes."""
        cdef CtxEntry *e = &self.slots[pid & (CTX_SLOTS - 1)]
        if pid == 0:
            return
        e.pid = pid
        e.gen = self.gens[pid & (GEN_SLOTS - 1)]
        e.ppid = ppid
        e.pgen = self.gens[ppid & (GEN_SLOTS - 1)]
        e.ntail = ntail
        self.objs[pid & (CTX_SLOTS - 1)] = (uid, memcg, tail, ntail)

    def forget(self, uint32_t pid):
        """Entries of pid and of its children are stale (the sensor forgot the process)."""
        self.bump(pid)
