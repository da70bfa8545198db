# Turn libbpf failures (negative errno, or NULL with errno set) into ProbeError, in ONE place.
from libc.errno cimport EACCES, EPERM, errno


cdef inline int _raise(int err, str what, str detail) except -1:
    from threatseer.native.errors import ProbeError
    import os
    msg = f"{what}: {os.strerror(err)}"
    if err in (EPERM, EACCES):
        msg += " (needs root, or CAP_BPF + CAP_PERFMON)"
    if detail:
        msg += "\n" + detail
    raise ProbeError(err, msg)


cdef inline int check_rc(long rc, str what, str detail=None) except -1:
    """rc < 0 is -errno (libbpf 1.x convention)."""
    if rc < 0:
        _raise(<int>-rc, what, detail)
    return <int>rc


cdef inline void *check_ptr(void *ptr, str what, str detail=None) except NULL:
    """NULL means failure with errno set (libbpf 1.x convention)."""
    if ptr == NULL:
        _raise(errno or 22, what, detail)
    return ptr
