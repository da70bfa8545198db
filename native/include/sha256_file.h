/* SHA-256 of a file with the x86 SHA extensions (SHA-NI), for the sensor's executable hashes.
 *
 * Why here: CPython's built-in SHA-256 hashes ~340 MB/s on this host and OpenSSL's ~1.2 GB/s,
 * but hashlib maps libcrypto (3.5 MiB of the sensor's RSS, sensor/digest.py). The SHA
 * instructions give OpenSSL's speed with no library, and the whole file is read and hashed
 * here without the GIL. Where the CPU lacks them (or on another architecture)
 * ts_sha256_file() returns TS_SHA_UNSUPPORTED and the caller uses the built-in module.
 *
 * The block function follows Intel's published SHA-NI sequence (the "Intel SHA Extensions"
 * white paper): state kept as ABEF/CDGH, four rounds per sha256rnds2 pair, the message
 * schedule with sha256msg1/sha256msg2. */
#ifndef TS_SHA256_FILE_H
#define TS_SHA256_FILE_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TS_SHA_OK 0
#define TS_SHA_ERRNO -1       /* open/read failed: errno says why */
#define TS_SHA_TOO_BIG -2     /* more than max_bytes */
#define TS_SHA_UNSUPPORTED -3 /* no SHA instructions on this CPU */
#define TS_SHA_CHUNK (256 * 1024)

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

static const uint32_t ts_sha256_k[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static int ts_sha256_supported(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 29)) != 0; /* CPUID.(EAX=7,ECX=0):EBX.SHA[bit 29] */
}

/* One group of four rounds (g = 0..15) on the message words of group g, held in w[g % 4];
 * it also advances the schedule of groups g + 1 (msg2) and g + 3 (msg1). */
#define TS_SHA_GROUP(g)                                                                    \
    do {                                                                                   \
        __m128i *cur = &w[(g) & 3];                                                        \
        if ((g) < 4)                                                                       \
            *cur = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * (g))),   \
                                    mask);                                                 \
        msg = _mm_add_epi32(*cur, _mm_load_si128((const __m128i *)&ts_sha256_k[4 * (g)])); \
        state1 = _mm_sha256rnds2_epu32(state1, state0, msg);                               \
        if ((g) >= 3 && (g) <= 14) {                                                       \
            __m128i *next = &w[((g) + 1) & 3];                                             \
            *next = _mm_add_epi32(*next, _mm_alignr_epi8(*cur, w[((g) + 3) & 3], 4));      \
            *next = _mm_sha256msg2_epu32(*next, *cur);                                     \
        }                                                                                  \
        msg = _mm_shuffle_epi32(msg, 0x0E);                                                \
        state0 = _mm_sha256rnds2_epu32(state0, state1, msg);                               \
        if ((g) >= 1 && (g) <= 12)                                                         \
            w[((g) + 3) & 3] = _mm_sha256msg1_epu32(w[((g) + 3) & 3], *cur);               \
    } while (0)

__attribute__((target("sha,sse4.1,ssse3"))) static void
ts_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks) {
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i state0, state1, msg, tmp, abef, cdgh;
    __m128i w[4];

    tmp = _mm_loadu_si128((const __m128i *)&state[0]);
    state1 = _mm_loadu_si128((const __m128i *)&state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);          /* CDAB */
    state1 = _mm_shuffle_epi32(state1, 0x1B);    /* EFGH */
    state0 = _mm_alignr_epi8(tmp, state1, 8);    /* ABEF */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0); /* CDGH */

    for (; blocks; blocks--, data += 64) {
        abef = state0;
        cdgh = state1;
        TS_SHA_GROUP(0); TS_SHA_GROUP(1); TS_SHA_GROUP(2); TS_SHA_GROUP(3);
        TS_SHA_GROUP(4); TS_SHA_GROUP(5); TS_SHA_GROUP(6); TS_SHA_GROUP(7);
        TS_SHA_GROUP(8); TS_SHA_GROUP(9); TS_SHA_GROUP(10); TS_SHA_GROUP(11);
        TS_SHA_GROUP(12); TS_SHA_GROUP(13); TS_SHA_GROUP(14); TS_SHA_GROUP(15);
        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
    }

    tmp = _mm_shuffle_epi32(state0, 0x1B);       /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);    /* DCHG */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0); /* DCBA */
    state1 = _mm_alignr_epi8(state1, tmp, 8);    /* ABEF */
    _mm_storeu_si128((__m128i *)&state[0], state0);
    _mm_storeu_si128((__m128i *)&state[4], state1);
}
#undef TS_SHA_GROUP

#else /* not x86-64: the caller uses CPython's built-in SHA-256 */
static int ts_sha256_supported(void) { return 0; }
static void ts_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks) {
    (void)state; (void)data; (void)blocks;
}
#endif

/* Pad and finish: `tail` holds the last `n` (< 64) bytes, `total` the message's length. */
static void ts_sha256_finish(uint32_t state[8], const uint8_t *tail, size_t n, uint64_t total,
                             uint8_t out[32]) {
    uint8_t last[128] = {0};
    size_t blocks = n < 56 ? 1 : 2;
    uint64_t bits = total * 8;
    memcpy(last, tail, n);
    last[n] = 0x80;
    for (int i = 0; i < 8; i++)
        last[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    ts_sha256_blocks(state, last, blocks);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(state[i] >> 8);
        out[4 * i + 3] = (uint8_t)state[i];
    }
}

/* SHA-256 of `len` bytes in memory (for the tests' comparison with hashlib). */
static int ts_sha256_bytes(const uint8_t *data, size_t len, uint8_t out[32]) {
    uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    if (!ts_sha256_supported())
        return TS_SHA_UNSUPPORTED;
    ts_sha256_blocks(state, data, len / 64);
    ts_sha256_finish(state, data + (len & ~(size_t)63), len & 63, len, out);
    return TS_SHA_OK;
}

/* SHA-256 of the file at `path`, reading at most `max_bytes` (more: TS_SHA_TOO_BIG). The
 * buffer is allocated per call: at 256 KiB glibc maps it and gives it back on free, so a
 * hash leaves no heap behind. */
static int ts_sha256_file(const char *path, uint64_t max_bytes, uint8_t out[32]) {
    uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint64_t total = 0;
    size_t have = 0; /* bytes in buf not hashed yet (< 64 between reads) */
    uint8_t *buf;
    int fd, err;

    if (!ts_sha256_supported())
        return TS_SHA_UNSUPPORTED;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return TS_SHA_ERRNO;
    buf = malloc(TS_SHA_CHUNK);
    if (!buf) {
        close(fd);
        errno = ENOMEM;
        return TS_SHA_ERRNO;
    }
    for (;;) {
        ssize_t n = read(fd, buf + have, TS_SHA_CHUNK - have);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            free(buf);
            close(fd);
            errno = err;
            return TS_SHA_ERRNO;
        }
        if (n == 0)
            break;
        total += (uint64_t)n;
        if (total > max_bytes) {
            free(buf);
            close(fd);
            return TS_SHA_TOO_BIG;
        }
        have += (size_t)n;
        ts_sha256_blocks(state, buf, have / 64);
        memmove(buf, buf + (have & ~(size_t)63), have & 63);
        have &= 63;
    }
    ts_sha256_finish(state, buf, have, total, out);
    free(buf);
    close(fd);
    return TS_SHA_OK;
}

#endif
