# Included by _bpf.pyx: privilege gains (set*id, capset) and process/kernel tricks (ptrace,
# memfd, module and BPF loads, mounts, namespaces).

# The ids before a change (uid euid suid fsuid gid egid sgid fsgid): ECS has no place for a
# process's previous credentials beyond user.id/user.effective.id/group.id.
cdef tuple _CRED_BEFORE = tuple(["threatseer.cred.before." + tsr_cred_ids[i].decode()
                                 for i in range(TSR_CRED_IDS)])
# The ids after it, in ECS's process.* user and group fields where ECS has one (the fs ids
# have none).
cdef tuple _CRED_AFTER = (
    "process.real_user.id", "process.user.id", "process.saved_user.id",
    "threatseer.cred.fsuid", "process.real_group.id", "process.group.id",
    "process.saved_group.id", "threatseer.cred.fsgid")
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


cdef dict decode_cred(Decoder dec, const tsr_cred *r):
    cdef uint16_t op = r.op
    cdef int i
    cdef uint64_t added
    if op < TSR_OP_SETUID or op > TSR_OP_CAPSET:
        raise ValueError(f"unknown cred op {op}")
    action = (actions.SETUID if op <= TSR_OP_SETFSUID else
              actions.SETGID if op <= TSR_OP_SETFSGID else actions.CAPSET)
    cdef dict d = dec.common(&r.h, action)
    d["threatseer.syscall"] = tsr_cred_syscalls[op].decode()
    d["event.outcome"] = _SUCCESS if r.result >= 0 else _FAILURE
    d["user.id"] = _id(r.before[0])            # who acted: the ids before the change
    d["user.effective.id"] = _id(r.before[1])
    d["group.id"] = _id(r.before[4])
    d["user.changes.id"] = _id(r.after[0])     # what the real ids became
    d["user.changes.group.id"] = _id(r.after[4])
    for i in range(TSR_CRED_IDS):
        d[_CRED_BEFORE[i]] = _id(r.before[i])
        d[_CRED_AFTER[i]] = _id(r.after[i])
    added = (r.cap_eff[1] & ~r.cap_eff[0]) | (r.cap_perm[1] & ~r.cap_perm[0])
    d["threatseer.capabilities.added"] = _cap_names(added)
    d["process.thread.capabilities.effective"] = _cap_names(r.cap_eff[1])
    d["process.thread.capabilities.permitted"] = _cap_names(r.cap_perm[1])
    return d



cdef dict decode_sys(Decoder dec, const tsr_sys *r):
    cdef uint16_t op = r.op
    cdef const char *s0 = r.data
    cdef const char *s1 = r.data + r.len[0]
    cdef const char *s2 = r.data + r.len[0] + r.len[1]
    cdef dict d
    if op == TSR_OP_PTRACE:
        d = dec.common(&r.h, actions.PTRACE)
        d["threatseer.ptrace.request"] = _PTRACE_REQUESTS.get(r.arg[0], str(r.arg[0]))
        d["threatseer.target.pid"] = <int32_t>r.arg[1]
    elif op == TSR_OP_VM_WRITE:
        d = dec.common(&r.h, actions.PROCESS_VM_WRITE)
        d["threatseer.target.pid"] = <int32_t>r.arg[0]
        if r.result >= 0:
            d["threatseer.vm_write.bytes"] = r.result
    elif op == TSR_OP_VM_READ:
        d = dec.common(&r.h, actions.PROCESS_VM_READ)
        d["threatseer.target.pid"] = <int32_t>r.arg[0]
        if r.result >= 0:
            d["threatseer.vm_read.bytes"] = r.result
    elif op == TSR_OP_MEMFD:
        d = dec.common(&r.h, actions.MEMFD_CREATE)
        d["file.name"] = _str_at(s0, r.len[0])
        d["threatseer.memfd.flags"] = _flag_names(r.arg[0], _MEMFD_FLAGS)
    elif op == TSR_OP_INIT_MODULE or op == TSR_OP_FINIT_MODULE:
        d = dec.common(&r.h, actions.MODULE_LOAD)
        d["threatseer.syscall"] = "finit_module" if op == TSR_OP_FINIT_MODULE else "init_module"
        if r.len[0]:
            d["file.path"] = _str_at(s0, r.len[0])
        if r.len[1]:
            d["threatseer.module.args"] = _str_at(s1, r.len[1])
    elif op == TSR_OP_BPF_LOAD:
        d = dec.common(&r.h, actions.BPF_LOAD)
        d["threatseer.bpf.prog_type"] = _BPF_PROG_TYPES.get(r.arg[0], str(r.arg[0]))
        d["threatseer.bpf.insn_count"] = r.arg[1]
        d["threatseer.bpf.prog_name"] = _str_at(s0, r.len[0]) if r.len[0] else ""
    elif op == TSR_OP_SET_NAME:
        d = dec.common(&r.h, actions.RENAME_PROCESS)
        d["process.name"] = _str_at(s0, r.len[0])
        d["process.title"] = _str_at(s1, r.len[1])
    elif op == TSR_OP_MOUNT or op == TSR_OP_MOVE_MOUNT:
        d = dec.common(&r.h, actions.MOUNT)
        d["threatseer.syscall"] = "mount" if op == TSR_OP_MOUNT else "move_mount"
        d["threatseer.mount.target"] = _str_at(s0, r.len[0])
        if r.len[1]:
            d["threatseer.mount.source"] = _str_at(s1, r.len[1])
        if r.len[2]:
            d["threatseer.mount.fstype"] = _str_at(s2, r.len[2])
        d["threatseer.mount.flags"] = r.arg[0]
    elif op == TSR_OP_UNSHARE:
        d = dec.common(&r.h, actions.UNSHARE)
        d["threatseer.ns.flags"] = _flag_names(r.arg[0], _NS_FLAGS)
    elif op == TSR_OP_SETNS:
        d = dec.common(&r.h, actions.SETNS)
        d["threatseer.ns.flags"] = _flag_names(r.arg[0], _NS_FLAGS)
        d["threatseer.setns.inode"] = r.arg[1]
    else:
        raise ValueError(f"unknown sys op {op}")
    d["event.outcome"] = _SUCCESS if r.result >= 0 else _FAILURE
    d["threatseer.result"] = r.result
    return d

