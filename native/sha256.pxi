# SHA-256 with the CPU's SHA instructions (native/include/sha256_file.h), without the GIL.
# sensor/digest.py uses it where the CPU has them, CPython's built-in module elsewhere.

SHA256_HARDWARE = bool(ts_sha256_supported())


class FileTooBig(Exception):
    """The file grew past the size cap while it was read."""


def sha256_file(str path, unsigned long long max_bytes):
    """The SHA-256 digest (32 bytes) of the file at ``path``, read here without the GIL.
    OSError (with errno) when it cannot be read, :class:`FileTooBig` past ``max_bytes``,
    NotImplementedError where the CPU has no SHA instructions (see SHA256_HARDWARE)."""
    cdef bytes bpath = path.encode("utf-8", "surrogateescape")
    cdef const char *cpath = bpath
    cdef uint8_t out[32]
    cdef int rc, err = 0
    with nogil:
        rc = ts_sha256_file(cpath, max_bytes, out)
        if rc == TS_SHA_ERRNO:
            err = errno
    if rc == TS_SHA_OK:
        return out[:32]
    if rc == TS_SHA_TOO_BIG:
        raise FileTooBig(path)
    if rc == TS_SHA_UNSUPPORTED:
        raise NotImplementedError("no SHA instructions on this CPU")
    import os
    raise OSError(err, os.strerror(err), path)


def sha256_bytes(const uint8_t[::1] data):
    """The SHA-256 digest of ``data`` (the tests compare it with hashlib's)."""
    cdef uint8_t out[32]
    if ts_sha256_bytes(&data[0] if data.shape[0] else <const uint8_t *>b"", data.shape[0],
                       out) != TS_SHA_OK:
        raise NotImplementedError("no SHA instructions on this CPU")
    return out[:32]
