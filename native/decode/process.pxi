# Included by _bpf.pyx: exec, fork (the common fields only, in decoder.pxi) and exit.

cdef list _exec_flags(uint16_t hflags, const char *path, uint32_t n):
    """Fileless / odd-place executables: memfd, deleted, tmp, dev-shm, hidden-dir; a network
    socket as stdin or stdout: stdin-socket, stdout-socket; a regular file as stdin or stdout:
    stdin-file, stdout-file; stdout a named file directly in /tmp, /var/tmp or /dev/shm:
    stdout-tmp."""
    cdef list out = []
    cdef uint32_t i, last = 0
    if hflags & TSR_F_EXE_MEMFD:
        out.append("memfd")
    elif hflags & TSR_F_EXE_DELETED:
        out.append("deleted")
    if hflags & TSR_F_STDIN_SOCK:
        out.append("stdin-socket")
    if hflags & TSR_F_STDOUT_SOCK:
        out.append("stdout-socket")
    if hflags & TSR_F_STDIN_FILE:
        out.append("stdin-file")
    if hflags & TSR_F_STDOUT_FILE:
        out.append("stdout-file")
    if hflags & TSR_F_STDOUT_TMP:
        out.append("stdout-tmp")
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


cdef dict decode_exec(Decoder dec, const tsr_exec *e):
    cdef dict d = dec.common(&e.h, actions.EXEC)
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
    d["process.session_leader.pid"] = e.h.task.sid
    if e.h.task.tty:
        d["process.tty.char_device.major"] = e.h.task.tty >> 20
        d["process.tty.char_device.minor"] = e.h.task.tty & 0xfffff
    d["threatseer.args_truncated"] = bool(e.h.flags & TSR_F_ARGS_TRUNC) or e.argc > len(args)
    if e.env_len:
        d["process.env_vars"] = [v.decode("utf-8", "replace")
                                 for v in a[alen:alen + e.env_len].split(b"\0") if v]
    return d



cdef dict decode_exit(Decoder dec, const tsr_exit *e):
    cdef dict d = dec.common(&e.h, actions.EXIT)
    cdef uint32_t sig = e.exit_code & 0x7f
    if sig:
        d["process.exit_code"] = 128 + sig
        d["threatseer.exit_signal"] = sig
    else:
        d["process.exit_code"] = (e.exit_code >> 8) & 0xff
    return d

