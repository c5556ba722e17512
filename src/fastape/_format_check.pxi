# The O(n) checks of a loaded tape's node records (fastape._format.validate_tape):
# one pass in C each, because a dozen numpy passes over 10^7 nodes, each with its own
# temporaries, cost ~0.15 s, most of a load. They return the first failing node and a
# code; fastape._format words the message (one place for the rules' meaning: the
# opcode table `flags` is built there, from the registry).

from libc.stdint cimport uint32_t

# flags[op] (fastape._format._RECORD_FLAGS): what a node's a and b must be
cdef enum:
    F_LEAF = 1        # a == b == -1
    F_B_NODE = 2      # b a node below i (binary and node-b structural ops)
    F_B_IS_A = 4      # b repeats a (unary ops)
    F_B_POOL = 8      # b an immediate's index into the pool
    F_STRUCT = 16     # has a parameter struct (general layout only)
    F_ELEM = 32       # elementwise: parents of size 1 or of the node's size


def _check_records(const uint8_t[::1] op, const i32[::1] a, const i32[::1] b,
                   const uint8_t[::1] flags, i64 npool, bint general):
    """(code, i) of the first node whose opcode, parents or immediate index is out of
    range, or (0, -1): 1 unknown opcode, 2 a leaf with parents, 3 a not below i,
    4 b not below i, 5 a unary op's b is not its a, 6 b outside the pool, 7 b is not
    -1, 8 a structural op in the scalar layout."""
    cdef i64 n = op.shape[0], i, nops = flags.shape[0], ai, bi
    cdef int code = 0
    cdef uint8_t f
    with nogil:
        for i in range(n):
            if op[i] >= nops:
                code = 1
                break
            f = flags[op[i]]
            ai = a[i]
            bi = b[i]
            if f & F_LEAF:
                if ai != -1 or bi != -1:
                    code = 2
                    break
                continue
            if ai < 0 or ai >= i:
                code = 3
            elif f & F_B_IS_A:
                if bi != ai:
                    code = 5
            elif f & F_B_NODE:
                if bi < 0 or bi >= i:
                    code = 4
            elif f & F_B_POOL:
                if bi < 0 or bi >= npool:
                    code = 6
            elif bi != -1:
                code = 7
            if not code and f & F_STRUCT and not general:
                code = 8
            if code:
                break
    if not code:
        i = -1
    return code, i


def _check_layout(const uint8_t[::1] op, const i32[::1] a, const i32[::1] b,
                  const i64[::1] off, const i64[::1] poff, const i64[::1] P,
                  const uint8_t[::1] flags, i64 nval):
    """The general layout's sizes and offsets (after _check_records): (code, i) of the
    first bad node, or (0, -1). Parameter structs follow each other in node order from
    0 (P[poff[i]] is node i's size; a node without one has size 1); structural nodes
    have one, the others at most one field; values follow each other (off[i] is the
    sum of the sizes before i) and fill the arena of nval; elementwise parents have size
    1 or the node's size. Codes: 10 poff outside P, 11 structs out of order, 12 a
    negative size, 13 a structural node without a struct, 14 an elementwise struct of
    more than one field, 15 an offset out of place, 16 the sizes overflow the arena,
    17 a's size, 18 b's size, 19 the sizes do not fill the arena, 20 parameters but no
    struct."""
    cdef i64 n = op.shape[0], nP = P.shape[0], i, p, sz, total = 0, sa, sb
    cdef i64 last = -1, last_node = -1, at = -1
    cdef int code = 0
    cdef uint8_t f
    with nogil:
        for i in range(n):
            f = flags[op[i]]
            p = poff[i]
            if p < -1 or p >= nP:
                code = 10
                break
            if p >= 0:
                if (last < 0 and p != 0) or (last >= 0 and p <= last):
                    code = 11
                    break
                if last_node >= 0 and not flags[op[last_node]] & F_STRUCT and p - last != 1:
                    code = 14
                    i = last_node
                    break
                sz = P[p]
                if sz < 0:
                    code = 12
                    break
                last = p
                last_node = i
            elif f & F_STRUCT:
                code = 13
                break
            else:
                sz = 1
            if off[i] != total:
                code = 15
                break
            if sz > nval - total:
                code = 16
                break
            total += sz
            if f & F_ELEM:
                # a, b < i: their offsets are checked, so off[j + 1] - off[j] is j's size
                sa = off[a[i] + 1] - off[a[i]]
                if sa != 1 and sa != sz:
                    code = 17
                    break
                if f & F_B_NODE:
                    sb = off[b[i] + 1] - off[b[i]]
                    if sb != 1 and sb != sz:
                        code = 18
                        break
        if code:
            at = i
        elif last_node >= 0 and not flags[op[last_node]] & F_STRUCT and nP - last != 1:
            code = 14
            at = last_node
        elif last < 0 and nP:
            code = 20
        elif total != nval:
            code = 19
    return code, at


cdef extern from *:
    """
    /* CRC-32 (zlib's, the zip container's) folded with carry-less multiplication:
       Gopal, Ozturk et al., "Fast CRC Computation for Generic Polynomials Using
       PCLMULQDQ Instruction" (Intel, 2009). Four 128-bit lanes are folded 512 bits
       ahead (x^(512+-32) mod P), then into one lane (x^(128+-32) mod P); the last
       lane and the tail (< 16 bytes) then go through the bitwise CRC, which gives the
       same remainder as the whole message, the lanes being congruent to it mod P
       (the constants are bit-reflected and shifted by one, as the paper's). zlib's
       table CRC runs ~2-3 GB/s here; this one at memory speed. */
    #include <stdint.h>
    #include <string.h>

    static uint32_t fastape_crc32_bits(uint32_t s, const unsigned char *p, size_t n) {
        /* the raw (not inverted) reflected CRC-32 state after n bytes */
        for (size_t i = 0; i < n; i++) {
            s ^= p[i];
            for (int k = 0; k < 8; k++)
                s = (s >> 1) ^ (0xEDB88320u & (0u - (s & 1u)));
        }
        return s;
    }

    #if defined(__x86_64__) && defined(__GNUC__)
    #include <immintrin.h>
    #define FASTAPE_CRC_FOLD 1

    __attribute__((target("pclmul,sse2")))
    static inline __m128i fastape_fold(__m128i x, __m128i next, __m128i k) {
        /* x's low half times k's low, its high half times k's high, plus next */
        __m128i lo = _mm_clmulepi64_si128(x, k, 0x00);
        __m128i hi = _mm_clmulepi64_si128(x, k, 0x11);
        return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
    }

    __attribute__((target("pclmul,sse2")))
    static uint32_t fastape_crc32_fold(const unsigned char *p, size_t n, uint32_t crc) {
        /* n >= 64 */
        const __m128i k512 = _mm_set_epi64x(0x1c6e41596LL, 0x154442bd4LL);
        const __m128i k128 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL);
        __m128i x0 = _mm_loadu_si128((const __m128i *)p);
        __m128i x1 = _mm_loadu_si128((const __m128i *)(p + 16));
        __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32));
        __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 48));
        x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)~crc));
        p += 64;
        n -= 64;
        while (n >= 64) {
            x0 = fastape_fold(x0, _mm_loadu_si128((const __m128i *)p), k512);
            x1 = fastape_fold(x1, _mm_loadu_si128((const __m128i *)(p + 16)), k512);
            x2 = fastape_fold(x2, _mm_loadu_si128((const __m128i *)(p + 32)), k512);
            x3 = fastape_fold(x3, _mm_loadu_si128((const __m128i *)(p + 48)), k512);
            p += 64;
            n -= 64;
        }
        x0 = fastape_fold(x0, x1, k128);
        x0 = fastape_fold(x0, x2, k128);
        x0 = fastape_fold(x0, x3, k128);
        while (n >= 16) {
            x0 = fastape_fold(x0, _mm_loadu_si128((const __m128i *)p), k128);
            p += 16;
            n -= 16;
        }
        unsigned char last[32];
        _mm_storeu_si128((__m128i *)last, x0);
        memcpy(last + 16, p, n);
        return ~fastape_crc32_bits(0, last, 16 + n);
    }
    #endif

    static int fastape_crc32_folds(void) {
    #ifdef FASTAPE_CRC_FOLD
        return __builtin_cpu_supports("pclmul");
    #else
        return 0;
    #endif
    }

    static uint32_t fastape_crc32(const unsigned char *p, size_t n, uint32_t crc,
                                  int fold) {
        /* zlib.crc32(p[:n], crc) */
    #ifdef FASTAPE_CRC_FOLD
        if (fold && n >= 64)
            return fastape_crc32_fold(p, n, crc);
    #endif
        return ~fastape_crc32_bits(~crc, p, n);
    }
    """
    int fastape_crc32_folds() noexcept nogil
    uint32_t fastape_crc32(const unsigned char *p, size_t n, uint32_t crc,
                           int fold) noexcept nogil


#: the processor multiplies without carries (PCLMULQDQ): _crc32 folds, else it is
#: the bitwise loop and fastape._format uses zlib's table instead
CRC32_FOLDS = bool(fastape_crc32_folds())


def _crc32(const uint8_t[::1] data, uint32_t crc=0, bint fold=True):
    """zlib.crc32(data, crc), folded with carry-less multiplication where the processor
    has it and `fold` (else bitwise: tests), the GIL released."""
    cdef size_t n = data.shape[0]
    fold = fold and CRC32_FOLDS
    if n == 0:
        return crc
    with nogil:
        crc = fastape_crc32(&data[0], n, crc, fold)
    return crc


cdef extern from *:
    """
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    static void fastape_advise_huge(char *p, size_t n) {
        /* madvise(MADV_HUGEPAGE) over the whole pages of p[:n], as numpy does for its
           arrays of 4 MiB and more: with transparent huge pages in "madvise" mode a
           buffer then faults 2 MiB at a time, not 4 KiB */
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
        if (n > a - (uintptr_t)p)
            madvise((void *)a, n - (a - (uintptr_t)p), MADV_HUGEPAGE);
    #endif
    }
    """
    void fastape_advise_huge(char *p, size_t n) noexcept nogil


def _advise_huge(uint8_t[::1] buf):
    """Huge pages for a buffer about to be filled (a loaded tape's records, read into
    untouched memory): reading 10^7 nodes' records into 4 KiB pages ran at half the
    speed of reading them into numpy's arrays, which numpy advises so."""
    if buf.shape[0] >= 1 << 22:
        fastape_advise_huge(<char*>&buf[0], buf.shape[0])
