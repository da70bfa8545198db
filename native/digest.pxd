# C declarations of native/include/sha256_file.h: SHA-256 with the x86 SHA instructions.
from libc.stdint cimport uint8_t, uint64_t

cdef extern from "sha256_file.h" nogil:
    enum:
        TS_SHA_OK
        TS_SHA_ERRNO
        TS_SHA_TOO_BIG
        TS_SHA_UNSUPPORTED
    int ts_sha256_supported()
    int ts_sha256_file(const char *path, uint64_t max_bytes, uint8_t *out)
    int ts_sha256_bytes(const uint8_t *data, size_t length, uint8_t *out)
