# Included by _bpf.pyx: sensitive opens and file changes.

# op -> event.action of file changes (truncations under a log prefix become log-truncate)
cdef dict _FILE_ACTIONS = {
    TSR_OP_CREATE: actions.FILE_CREATE, TSR_OP_WRITE_OPEN: actions.FILE_WRITE_OPEN,
    TSR_OP_TRUNC_OPEN: actions.FILE_TRUNCATE, TSR_OP_PROC_MEM: actions.PROC_MEM_WRITE,
    TSR_OP_PROC_MEM_READ: actions.PROC_MEM_READ,
    TSR_OP_UNLINK: actions.FILE_UNLINK, TSR_OP_RMDIR: actions.FILE_RMDIR, TSR_OP_RENAME: actions.FILE_RENAME,
    TSR_OP_LINK: actions.FILE_LINK, TSR_OP_SYMLINK: actions.FILE_SYMLINK, TSR_OP_MKDIR: actions.FILE_MKDIR,
    TSR_OP_CHMOD: actions.FILE_CHMOD, TSR_OP_CHOWN: actions.FILE_CHOWN, TSR_OP_UTIMES: actions.FILE_UTIMES,
    TSR_OP_SETXATTR: actions.FILE_SETXATTR, TSR_OP_TRUNCATE: actions.FILE_TRUNCATE,
}


cdef inline str _mode(uint32_t mode):
    return f"{mode & 0o7777:04o}"


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


cdef str _IO_URING = "io_uring"


cdef dict decode_open(Decoder dec, const tsr_open *o):
    cdef dict d = dec.common(&o.h, actions.OPEN)
    d["file.path"] = o.path[:strnlen(o.path, o.path_len)].decode("utf-8", "replace")
    d["threatseer.open.flags"] = _open_flags(o.flags)
    if o.h.flags & TSR_F_IO_URING:  # seen at submission: the result is not known yet
        d["threatseer.syscall"] = _IO_URING
        d["event.outcome"] = _UNKNOWN
        return d
    d["threatseer.open.result"] = o.result
    d["event.outcome"] = _SUCCESS if o.result >= 0 else _FAILURE
    return d



cdef dict decode_fchange(Decoder dec, const tsr_fchange *fc):
    cdef uint16_t op = fc.op
    cdef bint log = (fc.klass & TSR_W_LOG) != 0
    action = _FILE_ACTIONS.get(op)
    if action is None:
        raise ValueError(f"unknown file op {op}")
    if log and (op == TSR_OP_TRUNC_OPEN or (op == TSR_OP_TRUNCATE and fc.size == 0)):
        action = actions.LOG_TRUNCATE
    cdef dict d = dec.common(&fc.h, action)
    path = _str_at(fc.data, fc.path_len)
    if not fc.path2_len:
        d["file.path"] = path
    elif op == TSR_OP_SYMLINK:   # ECS: file.target_path is what a symlink points to
        d["file.path"] = path
        d["file.target_path"] = _str_at(fc.data + fc.path_len, fc.path2_len)
    else:                        # rename, link: the file is the new name (as Elastic Endpoint)
        d["file.path"] = _str_at(fc.data + fc.path_len, fc.path2_len)
        d["threatseer.file.source_path"] = path
    d["event.outcome"] = _SUCCESS if fc.result >= 0 else _FAILURE
    d["threatseer.file.result"] = fc.result
    if fc.h.flags & TSR_F_PATH_TRUNC:
        d["threatseer.path_truncated"] = True
    cdef bint is_open = op <= TSR_OP_PROC_MEM or op == TSR_OP_PROC_MEM_READ
    if is_open:       # opens: mode from the inode, the open's intent
        d["threatseer.open.flags"] = _open_flags(fc.flags)
    if is_open or op == TSR_OP_CHMOD or op == TSR_OP_MKDIR:
        d["file.mode"] = _mode(fc.mode)
        d["threatseer.file.setuid"] = (fc.mode & 0o4000) != 0
        d["threatseer.file.setgid"] = (fc.mode & 0o2000) != 0
    if op == TSR_OP_PROC_MEM or op == TSR_OP_PROC_MEM_READ:
        parts = path.split("/")
        if len(parts) > 2 and parts[2].isdigit():
            d["threatseer.target.pid"] = int(parts[2])
    elif op == TSR_OP_CHOWN:
        if fc.uid != 0xFFFFFFFF:
            d["file.uid"] = str(fc.uid)
        if fc.gid != 0xFFFFFFFF:
            d["file.gid"] = str(fc.gid)
    elif op == TSR_OP_UTIMES:
        if fc.mtime_set:
            d["file.mtime"] = dec.iso(fc.mtime_sec, fc.mtime_nsec)
    elif op == TSR_OP_TRUNCATE:
        d["file.size"] = fc.size
    elif op == TSR_OP_SETXATTR:
        d["threatseer.xattr.name"] = "security.capability"
        _file_caps(d, fc)
    return d



cdef _file_caps(dict d, const tsr_fchange *fc):
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

