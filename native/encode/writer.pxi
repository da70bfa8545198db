# Included by _bpf.pyx: msgpack written straight into a C buffer, for the events the reader
# encodes itself (encode/file.pxi). It writes what msgspec writes for the same values (the
# smallest form of each integer and string header): tests/native/test_native_encoder.py
# compares the bytes with threatseer.common.wire's encoding of the decoded event.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_AsUTF8AndSize


cdef extern from "Python.h":
    # Resizes a bytes object nobody else holds yet (CPython's own way to build one in
    # place); on failure it frees it, sets *pv to NULL and raises.
    int _PyBytes_Resize(PyObject **pv, Py_ssize_t newsize)


cdef struct Writer:
    # The run is written straight into a bytes object (``obj``, owned here until
    # w_take hands it out): no copy of the run, no buffer kept between runs.
    char *p
    Py_ssize_t n
    Py_ssize_t cap
    Py_ssize_t hint  # the last run's size: the next one starts with that much room
    Py_ssize_t room  # ... and with at least this much (set by the owner: its run limit)
    PyObject *obj


cdef int w_reserve(Writer *w, Py_ssize_t extra) except -1:
    """Room for ``extra`` more bytes; the w_* functions below write into it unchecked."""
    cdef Py_ssize_t cap
    if w.n + extra <= w.cap:
        return 0
    cap = max(w.cap * 2, w.n + extra, w.hint, w.room, 4096)
    if w.obj == NULL:
        o = PyBytes_FromStringAndSize(NULL, cap)
        Py_INCREF(o)
        w.obj = <PyObject *>o
    elif _PyBytes_Resize(&w.obj, cap) < 0:
        w.p = NULL
        w.n = w.cap = 0
        return -1
    w.p = PyBytes_AS_STRING(<object>w.obj)
    w.cap = cap
    return 0


cdef object w_take(Writer *w):
    """The bytes written so far, handed out; the writer starts afresh."""
    cdef object out
    if w.obj == NULL:
        return b""
    w.hint = min(w.n, 1 << 20)
    if _PyBytes_Resize(&w.obj, w.n) < 0:
        w.p = NULL
        w.n = w.cap = 0
        raise MemoryError()
    out = <object>w.obj
    Py_XDECREF(w.obj)
    w.obj = NULL
    w.p = NULL
    w.n = w.cap = 0
    return out


cdef void w_free(Writer *w) noexcept:
    Py_XDECREF(w.obj)
    w.obj = NULL
    w.p = NULL
    w.n = w.cap = 0


cdef inline void w_be(Writer *w, uint64_t v, int nbytes) noexcept:
    cdef int i
    for i in range(nbytes - 1, -1, -1):
        w.p[w.n + i] = <char>(v & 0xff)
        v >>= 8
    w.n += nbytes


cdef inline void w_byte(Writer *w, uint8_t b) noexcept:
    w.p[w.n] = <char>b
    w.n += 1


cdef inline void w_raw(Writer *w, const char *s, Py_ssize_t n) noexcept:
    memcpy(w.p + w.n, s, n)
    w.n += n


cdef inline void w_uint(Writer *w, uint64_t v) noexcept:
    if v < 128:
        w_byte(w, <uint8_t>v)
    elif v <= 0xff:
        w_byte(w, 0xcc)
        w_be(w, v, 1)
    elif v <= 0xffff:
        w_byte(w, 0xcd)
        w_be(w, v, 2)
    elif v <= 0xffffffffu:
        w_byte(w, 0xce)
        w_be(w, v, 4)
    else:
        w_byte(w, 0xcf)
        w_be(w, v, 8)


cdef inline void w_int(Writer *w, int64_t v) noexcept:
    if v >= 0:
        w_uint(w, <uint64_t>v)
    elif v >= -32:
        w_byte(w, <uint8_t>(v & 0xff))
    elif v >= -128:
        w_byte(w, 0xd0)
        w_be(w, <uint64_t>v, 1)
    elif v >= -32768:
        w_byte(w, 0xd1)
        w_be(w, <uint64_t>v, 2)
    elif v >= -2147483648:
        w_byte(w, 0xd2)
        w_be(w, <uint64_t>v, 4)
    else:
        w_byte(w, 0xd3)
        w_be(w, <uint64_t>v, 8)


cdef inline void w_str_header(Writer *w, Py_ssize_t n) noexcept:
    if n < 32:
        w_byte(w, 0xa0 | <uint8_t>n)
    elif n <= 0xff:
        w_byte(w, 0xd9)
        w_be(w, n, 1)
    elif n <= 0xffff:
        w_byte(w, 0xda)
        w_be(w, n, 2)
    else:
        w_byte(w, 0xdb)
        w_be(w, n, 4)


cdef inline void w_str(Writer *w, const char *s, Py_ssize_t n) noexcept:
    """A string of n bytes (room for n + 5 reserved)."""
    w_str_header(w, n)
    w_raw(w, s, n)


cdef int w_pystr(Writer *w, str s) except -1:
    """A Python string, as its UTF-8 (ASCII strings: their own buffer, no copy)."""
    cdef Py_ssize_t n
    cdef const char *p = PyUnicode_AsUTF8AndSize(s, &n)
    w_reserve(w, n + 5)
    w_str(w, p, n)
    return 0


cdef inline void w_map_header(Writer *w, Py_ssize_t n) noexcept:
    if n < 16:
        w_byte(w, 0x80 | <uint8_t>n)
    elif n <= 0xffff:
        w_byte(w, 0xde)
        w_be(w, n, 2)
    else:
        w_byte(w, 0xdf)
        w_be(w, n, 4)


cdef bytes _mp_str(str s):
    """Python-side msgpack of a short string (module constants)."""
    cdef bytes b = s.encode()
    if len(b) >= 32:
        raise ValueError(f"constant too long: {s}")
    return bytes([0xa0 | len(b)]) + b


cdef bytes _mp_strs(list items):
    """msgpack of a short list of short strings (module constants)."""
    if len(items) >= 16:
        raise ValueError("constant list too long")
    return bytes([0x90 | len(items)]) + b"".join([_mp_str(s) for s in items])
