# Included by _bpf.pyx: cgroup directories created and removed in the unified (v2)
# hierarchy and in the v1 memory hierarchy.

cdef dict decode_cgroup(Decoder dec, const tsr_cgroup *c):
    cdef dict d = dec.common(
        &c.h, actions.CONTAINER_CREATED if c.h.kind == TSR_CGROUP_MKDIR else actions.CONTAINER_DESTROYED)
    path = c.path[:strnlen(c.path, c.path_len)].decode("utf-8", "replace")
    d["threatseer.cgroup.path"] = path
    d["threatseer.cgroup.memory"] = path[path.rfind("/") + 1:]  # no [-1]: wraparound off
    d["threatseer.cgroup.hierarchy"] = c.root
    d["threatseer.cgroup.id"] = c.id  # the cgroup created or removed, not the actor's
    return d


