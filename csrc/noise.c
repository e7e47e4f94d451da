/*
 * noise.c -- robust noise estimates: the median absolute deviation of a
 * response image, globally and per tile. See ncalc.h for the contract.
 *
 * Exact selection, fast. Per tile (ncalc_tile_noise*): the masked pixels
 * are gathered a band of tiles at a time (one streaming sweep down the
 * rows; runs wholly inside or outside the mask are copied or skipped), then
 * the median and the median of the deviations |x - median| are selected:
 *  - a regular sample (about n / 16 values) brackets the wanted rank: both
 *    ends are found at once by counting passes over the sample (two
 *    thresholds a pass, interpolated, or halving when that did not halve
 *    the count); the deviations' sample is the values' sample made
 *    deviations (no second sampling of the tile);
 *  - one branch-free pass counts the values below the bracket and copies
 *    those inside it (compaction: 8 lanes moved to the front by a
 *    permutation with AVX2, 4 by a table with SSE2, one at a time else);
 *  - the k-th of those few is found by narrowing the bracket with
 *    vectorised counting passes (two thresholds a pass, interpolated about
 *    sqrt(count) ranks either side of the k-th, or a bisection after a pass
 *    that did not halve the count) until at most 16 values remain, which
 *    are copied out and sorted.
 * ncalc_mad_noise and the noise-level function's binned medians use the
 * same selection. The sample and the thresholds only decide the speed,
 * never the result (a missed bracket falls back to all values): every
 * output is the exact k-th value. Non-finite data take the older radix
 * selection on the float bits. On x86-64 with GCC the counting and
 * compaction loops have AVX2 versions chosen at run time
 * (__builtin_cpu_supports; NCALC_NO_CLONES disables them); they compute
 * the same floats (IEEE subtraction and absolute value, no contraction)
 * and counts as the portable loops, so results are bit-identical on every
 * CPU.
 */
#include "ncalc.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define NCALC_SSE2 1
#endif

/* The values a[i..n-1] of a bracket pass one at a time (the loop after the
 * vector ones): those below lo counted into below, those within [lo, hi]
 * copied to mid + m (branch-free); then the totals out. */
static inline void bracket_tail(const float *restrict a, ptrdiff_t i, ptrdiff_t n, int dev, float center,
                                float lo, float hi, float *restrict mid, ptrdiff_t below, ptrdiff_t m,
                                ptrdiff_t *below_out, ptrdiff_t *m_out)
{
    for (; i < n; i++) {
        const float v = dev ? fabsf(a[i] - center) : a[i];
        below += v < lo;
        mid[m] = v;
        m += (v >= lo) & (v <= hi);
    }
    *below_out = below;
    *m_out = m;
}

/* AVX2 versions of the counting and compaction loops, chosen at run time
 * (x86-64 GCC; NCALC_NO_CLONES disables them). They compute the same
 * float values (IEEE subtraction and absolute value, no contraction) and
 * the same counts as the portable loops: the results are bit-identical. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && (__GNUC__ >= 6) && \
    !defined(NCALC_NO_CLONES)
#include <immintrin.h>
#define NCALC_AVX2 1
#define NCALC_TARGET_AVX2 __attribute__((target("avx2,popcnt")))

/* The CPU's features, known from libgcc's start-up (no state here). */
static inline int have_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

/* Nibble j of compact8[bits]: the lane of the j-th set bit of bits. */
static const uint32_t compact8[256] = {
0x00000000, 0x00000000, 0x00000001, 0x00000010, 0x00000002, 0x00000020, 0x00000021, 0x00000210,
0x00000003, 0x00000030, 0x00000031, 0x00000310, 0x00000032, 0x00000320, 0x00000321, 0x00003210,
0x00000004, 0x00000040, 0x00000041, 0x00000410, 0x00000042, 0x00000420, 0x00000421, 0x00004210,
0x00000043, 0x00000430, 0x00000431, 0x00004310, 0x00000432, 0x00004320, 0x00004321, 0x00043210,
0x00000005, 0x00000050, 0x00000051, 0x00000510, 0x00000052, 0x00000520, 0x00000521, 0x00005210,
0x00000053, 0x00000530, 0x00000531, 0x00005310, 0x00000532, 0x00005320, 0x00005321, 0x00053210,
0x00000054, 0x00000540, 0x00000541, 0x00005410, 0x00000542, 0x00005420, 0x00005421, 0x00054210,
0x00000543, 0x00005430, 0x00005431, 0x00054310, 0x00005432, 0x00054320, 0x00054321, 0x00543210,
0x00000006, 0x00000060, 0x00000061, 0x00000610, 0x00000062, 0x00000620, 0x00000621, 0x00006210,
0x00000063, 0x00000630, 0x00000631, 0x00006310, 0x00000632, 0x00006320, 0x00006321, 0x00063210,
0x00000064, 0x00000640, 0x00000641, 0x00006410, 0x00000642, 0x00006420, 0x00006421, 0x00064210,
0x00000643, 0x00006430, 0x00006431, 0x00064310, 0x00006432, 0x00064320, 0x00064321, 0x00643210,
0x00000065, 0x00000650, 0x00000651, 0x00006510, 0x00000652, 0x00006520, 0x00006521, 0x00065210,
0x00000653, 0x00006530, 0x00006531, 0x00065310, 0x00006532, 0x00065320, 0x00065321, 0x00653210,
0x00000654, 0x00006540, 0x00006541, 0x00065410, 0x00006542, 0x00065420, 0x00065421, 0x00654210,
0x00006543, 0x00065430, 0x00065431, 0x00654310, 0x00065432, 0x00654320, 0x00654321, 0x06543210,
0x00000007, 0x00000070, 0x00000071, 0x00000710, 0x00000072, 0x00000720, 0x00000721, 0x00007210,
0x00000073, 0x00000730, 0x00000731, 0x00007310, 0x00000732, 0x00007320, 0x00007321, 0x00073210,
0x00000074, 0x00000740, 0x00000741, 0x00007410, 0x00000742, 0x00007420, 0x00007421, 0x00074210,
0x00000743, 0x00007430, 0x00007431, 0x00074310, 0x00007432, 0x00074320, 0x00074321, 0x00743210,
0x00000075, 0x00000750, 0x00000751, 0x00007510, 0x00000752, 0x00007520, 0x00007521, 0x00075210,
0x00000753, 0x00007530, 0x00007531, 0x00075310, 0x00007532, 0x00075320, 0x00075321, 0x00753210,
0x00000754, 0x00007540, 0x00007541, 0x00075410, 0x00007542, 0x00075420, 0x00075421, 0x00754210,
0x00007543, 0x00075430, 0x00075431, 0x00754310, 0x00075432, 0x00754320, 0x00754321, 0x07543210,
0x00000076, 0x00000760, 0x00000761, 0x00007610, 0x00000762, 0x00007620, 0x00007621, 0x00076210,
0x00000763, 0x00007630, 0x00007631, 0x00076310, 0x00007632, 0x00076320, 0x00076321, 0x00763210,
0x00000764, 0x00007640, 0x00007641, 0x00076410, 0x00007642, 0x00076420, 0x00076421, 0x00764210,
0x00007643, 0x00076430, 0x00076431, 0x00764310, 0x00076432, 0x00764320, 0x00764321, 0x07643210,
0x00000765, 0x00007650, 0x00007651, 0x00076510, 0x00007652, 0x00076520, 0x00076521, 0x00765210,
0x00007653, 0x00076530, 0x00076531, 0x00765310, 0x00076532, 0x00765320, 0x00765321, 0x07653210,
0x00007654, 0x00076540, 0x00076541, 0x00765410, 0x00076542, 0x00765420, 0x00765421, 0x07654210,
0x00076543, 0x00765430, 0x00765431, 0x07654310, 0x00765432, 0x07654320, 0x07654321, 0x76543210
};

/* bracket_pass, 8 values at a time: the in-bracket lanes are moved to the
 * front by a permutation and all 8 stored (mid: room for n floats; the
 * store at mid + m, m <= i, ends before mid + n). */
NCALC_TARGET_AVX2
static void bracket_pass_avx2(const float *restrict a, ptrdiff_t n, int dev, float center,
                              float lo, float hi, float *restrict mid, ptrdiff_t *below_out,
                              ptrdiff_t *m_out)
{
    ptrdiff_t below = 0, m = 0, i = 0;
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi), vc = _mm256_set1_ps(center);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    while (i + 8 <= n) {
        /* 32-bit lane counts: flushed every 2^30 values */
        const ptrdiff_t iend = n - i > ((ptrdiff_t)1 << 30) ? i + ((ptrdiff_t)1 << 30) : n;
        __m256i vb = _mm256_setzero_si256();
        for (; i + 8 <= iend; i += 8) {
            __m256 v = _mm256_loadu_ps(a + i);
            if (dev) v = _mm256_and_ps(_mm256_sub_ps(v, vc), absmask); /* fabsf(a - center) */
            const __m256 below_lo = _mm256_cmp_ps(v, vlo, _CMP_LT_OQ);
            vb = _mm256_sub_epi32(vb, _mm256_castps_si256(below_lo));
            /* lo <= v <= hi: not below lo (v is not NaN) and <= hi */
            const unsigned bits = (unsigned)_mm256_movemask_ps(
                _mm256_andnot_ps(below_lo, _mm256_cmp_ps(v, vhi, _CMP_LE_OQ)));
            const __m256i perm = _mm256_srlv_epi32(_mm256_set1_epi32((int)compact8[bits]), shifts);
            _mm256_storeu_ps(mid + m, _mm256_permutevar8x32_ps(v, perm));
            m += __builtin_popcount(bits);
        }
        int32_t cb[8];
        _mm256_storeu_si256((__m256i *)cb, vb);
        for (int j = 0; j < 8; j++) below += cb[j];
    }
    bracket_tail(a, i, n, dev, center, lo, hi, mid, below, m, below_out, m_out);
}

/* Number of a[0..n-1] <= t. */
NCALC_TARGET_AVX2
static ptrdiff_t count_le_avx2(const float *restrict a, ptrdiff_t n, float t)
{
    ptrdiff_t c = 0, i = 0;
    const __m256 vt = _mm256_set1_ps(t);
    while (i + 32 <= n) {
        const ptrdiff_t iend = n - i > ((ptrdiff_t)1 << 30) ? i + ((ptrdiff_t)1 << 30) : n;
        __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
        for (; i + 32 <= iend; i += 32) {
            const __m256 x0 = _mm256_loadu_ps(a + i), x1 = _mm256_loadu_ps(a + i + 8);
            const __m256 x2 = _mm256_loadu_ps(a + i + 16), x3 = _mm256_loadu_ps(a + i + 24);
            c0 = _mm256_sub_epi32(c0, _mm256_castps_si256(_mm256_cmp_ps(x0, vt, _CMP_LE_OQ)));
            c1 = _mm256_sub_epi32(c1, _mm256_castps_si256(_mm256_cmp_ps(x1, vt, _CMP_LE_OQ)));
            c2 = _mm256_sub_epi32(c2, _mm256_castps_si256(_mm256_cmp_ps(x2, vt, _CMP_LE_OQ)));
            c3 = _mm256_sub_epi32(c3, _mm256_castps_si256(_mm256_cmp_ps(x3, vt, _CMP_LE_OQ)));
        }
        int32_t cb[8];
        _mm256_storeu_si256((__m256i *)cb,
                            _mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)));
        for (int j = 0; j < 8; j++) c += cb[j];
    }
    for (; i < n; i++) c += a[i] <= t;
    return c;
}

/* Numbers of a[0..n-1] <= t1 and <= t2, in one pass. */
NCALC_TARGET_AVX2
static void count_le2_avx2(const float *restrict a, ptrdiff_t n, float t1, float t2,
                           ptrdiff_t *c1, ptrdiff_t *c2)
{
    ptrdiff_t s1 = 0, s2 = 0, i = 0;
    const __m256 v1 = _mm256_set1_ps(t1), v2 = _mm256_set1_ps(t2);
    while (i + 16 <= n) {
        const ptrdiff_t iend = n - i > ((ptrdiff_t)1 << 30) ? i + ((ptrdiff_t)1 << 30) : n;
        __m256i a1 = _mm256_setzero_si256(), b1 = a1, a2 = a1, b2 = a1;
        for (; i + 16 <= iend; i += 16) {
            const __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(a + i + 8);
            a1 = _mm256_sub_epi32(a1, _mm256_castps_si256(_mm256_cmp_ps(x, v1, _CMP_LE_OQ)));
            b1 = _mm256_sub_epi32(b1, _mm256_castps_si256(_mm256_cmp_ps(y, v1, _CMP_LE_OQ)));
            a2 = _mm256_sub_epi32(a2, _mm256_castps_si256(_mm256_cmp_ps(x, v2, _CMP_LE_OQ)));
            b2 = _mm256_sub_epi32(b2, _mm256_castps_si256(_mm256_cmp_ps(y, v2, _CMP_LE_OQ)));
        }
        int32_t q1[8], q2[8];
        _mm256_storeu_si256((__m256i *)q1, _mm256_add_epi32(a1, b1));
        _mm256_storeu_si256((__m256i *)q2, _mm256_add_epi32(a2, b2));
        for (int j = 0; j < 8; j++) {
            s1 += q1[j];
            s2 += q2[j];
        }
    }
    for (; i < n; i++) {
        s1 += a[i] <= t1;
        s2 += a[i] <= t2;
    }
    *c1 = s1;
    *c2 = s2;
}

/* One row of ncalc_tile_band at stride 1, 8 values at a time (the AVX2
 * twin of band_row_avx512 below): for each of the gw tiles across the row,
 * the row's values in the tile whose mask byte is nonzero (every value when
 * mrow is NULL) appended in order to that tile's gathered values (buf + bc
 * cap, cnt[bc] of them so far), and fin[bc] cleared if one is NaN or
 * infinite: the same values, order, counts and flags as gather. The kept
 * lanes of 8 are moved to the front by a permutation and all 8 stored; the
 * other lanes land where the tile's next values go. That stays inside the
 * tile's room: a block of 8 starts at most at the count of the tile's
 * pixels before it, and cap counts all of them, so the store ends at or
 * before cap. Each tile's last columns (fewer than 8) go one at a time.
 * Nothing is read past the row's cols values and mask bytes. */
NCALC_TARGET_AVX2
static void band_row_avx2(const float *restrict row, const uint8_t *restrict mrow, ptrdiff_t cols,
                          ptrdiff_t tile, ptrdiff_t gw, float *restrict buf, size_t cap,
                          ptrdiff_t *restrict cnt, int *restrict fin)
{
    const __m256 big = _mm256_set1_ps(FLT_MAX);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m128i zero = _mm_setzero_si128();
    for (ptrdiff_t bc = 0; bc < gw; bc++) {
        const ptrdiff_t c0 = bc * tile, c1 = c0 + tile < cols ? c0 + tile : cols;
        float *restrict out = buf + (size_t)bc * cap + cnt[bc];
        ptrdiff_t kept = 0, c = c0;
        unsigned bad = 0;
        for (; c + 8 <= c1; c += 8) {
            unsigned in = 0xffu;
            if (mrow) {
                const __m128i mb = _mm_loadl_epi64((const __m128i *)(const void *)(mrow + c));
                in = ~(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(mb, zero)) & 0xffu;
                if (!in) continue;
            }
            const __m256 v = _mm256_loadu_ps(row + c);
            /* !(|v| <= FLT_MAX): infinite or NaN */
            bad |= in & (unsigned)_mm256_movemask_ps(
                            _mm256_cmp_ps(_mm256_and_ps(v, absmask), big, _CMP_NLE_UQ));
            if (in == 0xffu) {
                _mm256_storeu_ps(out + kept, v);
                kept += 8;
            } else {
                const __m256i perm = _mm256_srlv_epi32(_mm256_set1_epi32((int)compact8[in]), shifts);
                _mm256_storeu_ps(out + kept, _mm256_permutevar8x32_ps(v, perm));
                kept += __builtin_popcount(in);
            }
        }
        for (; c < c1; c++) {
            const int in = mrow ? mrow[c] != 0 : 1;
            out[kept] = row[c];
            kept += in;
            bad |= (unsigned)(in & !(fabsf(row[c]) <= FLT_MAX));
        }
        cnt[bc] += kept;
        if (bad) fin[bc] = 0;
    }
}

/* AVX-512 (AVX512F) versions of the same three loops, 16 values at a time,
 * chosen before the AVX2 ones when the CPU has it (GCC >= 11;
 * NCALC_NO_AVX512 leaves them out, so that the AVX2 ones can be tested on
 * such a CPU). The same predicates, values and counts: the compaction keeps
 * the lanes' order (vcompressps), the counts are mask popcounts. */
#if __GNUC__ >= 11 && !defined(NCALC_NO_AVX512)
#define NCALC_AVX512 1
#define NCALC_TARGET_AVX512 __attribute__((target("avx512f,popcnt")))

static inline int have_avx512(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("popcnt");
}

/* The same with AVX512BW and AVX512VL (byte masks, 128-bit masked loads). */
#define NCALC_TARGET_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

static inline int have_avx512bw(void)
{
    return have_avx512() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

/* bracket_pass, 16 values at a time: the in-bracket lanes compressed to the
 * front and all 16 stored (mid: room for n floats; the store at mid + m,
 * m <= i, ends before mid + n). */
NCALC_TARGET_AVX512
static void bracket_pass_avx512(const float *restrict a, ptrdiff_t n, int dev, float center,
                                float lo, float hi, float *restrict mid, ptrdiff_t *below_out,
                                ptrdiff_t *m_out)
{
    ptrdiff_t below = 0, m = 0, i = 0;
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), vc = _mm512_set1_ps(center);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(a + i);
        if (dev) v = _mm512_abs_ps(_mm512_sub_ps(v, vc)); /* fabsf(a - center): the sign bit cleared */
        const __mmask16 below_lo = _mm512_cmp_ps_mask(v, vlo, _CMP_LT_OQ);
        /* lo <= v <= hi: not below lo (v is not NaN) and <= hi */
        const __mmask16 in = (__mmask16)(~below_lo & _mm512_cmp_ps_mask(v, vhi, _CMP_LE_OQ));
        _mm512_storeu_ps(mid + m, _mm512_maskz_compress_ps(in, v));
        below += __builtin_popcount((unsigned)below_lo);
        m += __builtin_popcount((unsigned)in);
    }
    bracket_tail(a, i, n, dev, center, lo, hi, mid, below, m, below_out, m_out);
}

/* Number of a[0..n-1] <= t. */
NCALC_TARGET_AVX512
static ptrdiff_t count_le_avx512(const float *restrict a, ptrdiff_t n, float t)
{
    ptrdiff_t c = 0, i = 0;
    const __m512 vt = _mm512_set1_ps(t);
    for (; i + 32 <= n; i += 32) {
        const __mmask16 k0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(a + i), vt, _CMP_LE_OQ);
        const __mmask16 k1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(a + i + 16), vt, _CMP_LE_OQ);
        c += __builtin_popcount((unsigned)k0 | ((unsigned)k1 << 16));
    }
    for (; i < n; i++) c += a[i] <= t;
    return c;
}

/* Numbers of a[0..n-1] <= t1 and <= t2, in one pass. */
NCALC_TARGET_AVX512
static void count_le2_avx512(const float *restrict a, ptrdiff_t n, float t1, float t2,
                             ptrdiff_t *c1, ptrdiff_t *c2)
{
    ptrdiff_t s1 = 0, s2 = 0, i = 0;
    const __m512 v1 = _mm512_set1_ps(t1), v2 = _mm512_set1_ps(t2);
    for (; i + 32 <= n; i += 32) {
        const __m512 x = _mm512_loadu_ps(a + i), y = _mm512_loadu_ps(a + i + 16);
        s1 += __builtin_popcount((unsigned)_mm512_cmp_ps_mask(x, v1, _CMP_LE_OQ) |
                                 ((unsigned)_mm512_cmp_ps_mask(y, v1, _CMP_LE_OQ) << 16));
        s2 += __builtin_popcount((unsigned)_mm512_cmp_ps_mask(x, v2, _CMP_LE_OQ) |
                                 ((unsigned)_mm512_cmp_ps_mask(y, v2, _CMP_LE_OQ) << 16));
    }
    for (; i < n; i++) {
        s1 += a[i] <= t1;
        s2 += a[i] <= t2;
    }
    *c1 = s1;
    *c2 = s2;
}

/* One row of ncalc_tile_band at stride 1, 16 values at a time: for each
 * of the gw tiles across the row (tile wide, the last one cut at cols),
 * the row's values in the tile whose mask byte is nonzero (every value
 * when mrow is NULL) appended in order to that tile's gathered values
 * (buf + bc cap, cnt[bc] of them so far), and fin[bc] cleared if one is
 * NaN or infinite: the same values, order, counts and flags as gather.
 * Masked loads and stores: nothing is read past the row's cols values and
 * mask bytes, nor stored past the values kept. */
NCALC_TARGET_AVX512BW
static void band_row_avx512(const float *restrict row, const uint8_t *restrict mrow, ptrdiff_t cols,
                            ptrdiff_t tile, ptrdiff_t gw, float *restrict buf, size_t cap,
                            ptrdiff_t *restrict cnt, int *restrict fin)
{
    const __m512 big = _mm512_set1_ps(FLT_MAX);
    for (ptrdiff_t bc = 0; bc < gw; bc++) {
        const ptrdiff_t c0 = bc * tile, c1 = c0 + tile < cols ? c0 + tile : cols;
        float *restrict out = buf + (size_t)bc * cap + cnt[bc];
        ptrdiff_t kept = 0;
        __mmask16 bad = 0;
        for (ptrdiff_t c = c0; c < c1; c += 16) {
            const __mmask16 k = c1 - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (c1 - c)) - 1u);
            __mmask16 in = k;
            if (mrow) {
                const __m128i mb = _mm_maskz_loadu_epi8(k, mrow + c);
                in = _mm_test_epi8_mask(mb, mb);
                if (!in) continue;
            }
            const __m512 v = _mm512_maskz_loadu_ps(in, row + c);
            const int n_in = __builtin_popcount((unsigned)in);
            _mm512_mask_storeu_ps(out + kept, (__mmask16)((1u << n_in) - 1u),
                                  _mm512_maskz_compress_ps(in, v));
            /* !(|v| <= FLT_MAX): infinite or NaN */
            bad |= _mm512_mask_cmp_ps_mask(in, _mm512_abs_ps(v), big, _CMP_NLE_UQ);
            kept += n_in;
        }
        cnt[bc] += kept;
        if (bad) fin[bc] = 0;
    }
}
#endif
#endif

/* Order-preserving map of a (non-NaN) float to an unsigned key. */
static inline uint32_t f2key(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float key2f(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Radix digits of the sort: 11 + 11 + 10 bits. Below SORT_PAR_MIN values
 * one thread sorts (a parallel region costs more than it saves). */
#define SORT_BINS 2048
#define SORT_PAR_MIN 32768
#define SORT_MAX_THREADS 64

int ncalc_sort_f32(const float *x, ptrdiff_t n, float *out, int nthreads)
{
    if (n < 0 || (n > 0 && (!x || !out))) return NCALC_EINVAL;
    if (n < 2) {
        if (n == 1) {
            if (isnan(x[0])) return NCALC_EINVAL;
            out[0] = x[0];
        }
        return NCALC_OK;
    }
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    if (nt > SORT_MAX_THREADS) nt = SORT_MAX_THREADS;
    if (n < SORT_PAR_MIN || nt < 1) nt = 1;
    /* (the keys from the pool: their fresh pages would be faulted in on every call) */
    uint32_t *a = ncalc_buffer_get(sizeof(uint32_t) * (size_t)n);
    uint32_t *b = ncalc_buffer_get(sizeof(uint32_t) * (size_t)n);
    /* per thread, the counts of each digit in its share of the keys */
    ptrdiff_t *hist = malloc(sizeof(ptrdiff_t) * SORT_BINS * (size_t)nt);
    if (!a || !b || !hist) {
        ncalc_buffer_put(a);
        ncalc_buffer_put(b);
        free(hist);
        return NCALC_ENOMEM;
    }
    int bad = 0;
    /* least significant digit first, each pass a stable counting sort: each
     * thread counts its contiguous share of the keys, then moves them to
     * the places all threads' counts give it (before its share come the
     * smaller digits of every share and its own digit in the shares before
     * it). The order is a stable sort's whatever the number of threads. */
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        int T, t;
        ptrdiff_t lo, hi;
        ncalc_thread_share(n, &T, &t, &lo, &hi);
        int nan_here = 0;
        for (ptrdiff_t i = lo; i < hi; i++) {
            nan_here |= isnan(x[i]) != 0;
            a[i] = f2key(x[i]);
        }
        const int stop = ncalc_team_any(nan_here, &bad);
        uint32_t *src = a, *dst = b;
        ptrdiff_t *h = hist + (size_t)SORT_BINS * t, off[SORT_BINS];
        for (int pass = 0; pass < 3 && !stop; pass++) {
            const int shift = 11 * pass;
            memset(h, 0, sizeof(ptrdiff_t) * SORT_BINS);
            for (ptrdiff_t i = lo; i < hi; i++) h[(src[i] >> shift) & 0x7ff]++;
#pragma omp barrier
            /* one digit value everywhere: nothing moves (the same test in every thread) */
            const uint32_t d0 = (src[0] >> shift) & 0x7ff;
            ptrdiff_t c0 = 0;
            for (int u = 0; u < T; u++) c0 += hist[(size_t)SORT_BINS * u + d0];
            if (c0 != n) {
                ptrdiff_t base = 0;
                for (int d = 0; d < SORT_BINS; d++) {
                    ptrdiff_t mine = base;
                    for (int u = 0; u < T; u++) {
                        const ptrdiff_t c = hist[(size_t)SORT_BINS * u + d];
                        if (u < t) mine += c;
                        base += c;
                    }
                    off[d] = mine;
                }
                for (ptrdiff_t i = lo; i < hi; i++) {
                    const uint32_t k = src[i];
                    dst[off[(k >> shift) & 0x7ff]++] = k;
                }
                uint32_t *tmp = src;
                src = dst;
                dst = tmp;
            }
#pragma omp barrier /* the pass is complete, and every count read, before the next */
        }
        if (!stop)
            for (ptrdiff_t i = lo; i < hi; i++) out[i] = key2f(src[i]);
    }
    ncalc_buffer_put(a);
    ncalc_buffer_put(b);
    free(hist);
    return bad ? NCALC_EINVAL : NCALC_OK;
}

/* Keep the keys whose digit (key >> shift) & mask is the one holding rank
 * *k; update *k to the rank among them. Returns how many were kept. */
static ptrdiff_t radix_pass(uint32_t *key, ptrdiff_t n, int shift, uint32_t mask, ptrdiff_t *k,
                            uint32_t *digit)
{
    ptrdiff_t hist[2048];
    memset(hist, 0, sizeof(ptrdiff_t) * (mask + 1));
    for (ptrdiff_t i = 0; i < n; i++) hist[(key[i] >> shift) & mask]++;
    uint32_t d = 0;
    ptrdiff_t before = 0;
    while (before + hist[d] <= *k) before += hist[d++];
    *k -= before;
    ptrdiff_t m = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        if (((key[i] >> shift) & mask) == d) key[m++] = key[i];
    *digit = d;
    return m;
}

/* k-th smallest (0-based) of a[0..n-1], exactly, by a three-digit radix
 * selection on the float bits (11 + 11 + 10 bits): branch-light, O(n).
 * key: n words of scratch. a is not modified. */
static float select_kth(const float *a, ptrdiff_t n, ptrdiff_t k, uint32_t *key)
{
    for (ptrdiff_t i = 0; i < n; i++) key[i] = f2key(a[i]);
    uint32_t d0, d1, d2;
    ptrdiff_t m = radix_pass(key, n, 21, 0x7ff, &k, &d0);
    m = radix_pass(key, m, 10, 0x7ff, &k, &d1);
    radix_pass(key, m, 0, 0x3ff, &k, &d2);
    return key2f((d0 << 21) | (d1 << 10) | d2);
}

/* 1.4826 * MAD of buf[0..m-1] (m >= 2), by radix selection on the float
 * bits; overwrites buf. Used when buf holds NaNs or infinities. */
static double mad_of_radix(float *buf, ptrdiff_t m, uint32_t *key)
{
    float med = select_kth(buf, m, (m - 1) / 2, key);
    for (ptrdiff_t i = 0; i < m; i++) buf[i] = fabsf(buf[i] - med);
    return 1.4826 * (double)select_kth(buf, m, (m - 1) / 2, key);
}

static inline void swapf(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

/* k-th smallest (0-based) of a[0..n-1] (finite values), in place:
 * quickselect with a median-of-three pivot and insertion sort on short
 * ranges; after 2 log2(n) + 8 rounds without converging (an adversarial
 * order) it finishes with the radix selection. key: n words of scratch. */
static float quickselect(float *a, ptrdiff_t n, ptrdiff_t k, uint32_t *key)
{
    ptrdiff_t lo = 0, hi = n - 1;
    int budget = 8;
    for (ptrdiff_t m = n; m > 1; m >>= 1) budget += 2;
    while (hi - lo > 16) {
        if (--budget < 0) return select_kth(a + lo, hi - lo + 1, k - lo, key);
        ptrdiff_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swapf(&a[mid], &a[lo]);
        if (a[hi] < a[lo]) swapf(&a[hi], &a[lo]);
        if (a[hi] < a[mid]) swapf(&a[hi], &a[mid]);
        const float piv = a[mid];
        ptrdiff_t i = lo, j = hi;
        /* Hoare partition: a[lo..j] <= piv <= a[i..hi] */
        while (i <= j) {
            while (a[i] < piv) i++;
            while (piv < a[j]) j--;
            if (i <= j) {
                swapf(&a[i], &a[j]);
                i++;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k]; /* between the two parts: equal to the pivot */
    }
    for (ptrdiff_t i = lo + 1; i <= hi; i++) {
        float v = a[i];
        ptrdiff_t j = i - 1;
        while (j >= lo && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
    return a[k];
}

/* The value of element i: x itself, or its deviation |x - center|. */
static inline float val(const float *a, ptrdiff_t i, int dev, float center)
{
    return dev ? fabsf(a[i] - center) : a[i];
}

/* Number of a[0..n-1] <= t (vectorised). */
static ptrdiff_t count_le(const float *restrict a, ptrdiff_t n, float t)
{
#ifdef NCALC_AVX512
    if (have_avx512()) return count_le_avx512(a, n, t);
#endif
#ifdef NCALC_AVX2
    if (have_avx2()) return count_le_avx2(a, n, t);
#endif
    ptrdiff_t c = 0;
    for (ptrdiff_t i0 = 0; i0 < n; i0 += (ptrdiff_t)1 << 30) {
        const ptrdiff_t i1 = n - i0 < ((ptrdiff_t)1 << 30) ? n : i0 + ((ptrdiff_t)1 << 30);
        int32_t ci = 0; /* 32-bit lanes: vectorised */
        for (ptrdiff_t i = i0; i < i1; i++) ci += a[i] <= t;
        c += ci;
    }
    return c;
}

/* Numbers of a[0..n-1] <= t1 and <= t2, in one pass (vectorised). */
static void count_le2(const float *restrict a, ptrdiff_t n, float t1, float t2, ptrdiff_t *c1,
                      ptrdiff_t *c2)
{
#ifdef NCALC_AVX512
    if (have_avx512()) {
        count_le2_avx512(a, n, t1, t2, c1, c2);
        return;
    }
#endif
#ifdef NCALC_AVX2
    if (have_avx2()) {
        count_le2_avx2(a, n, t1, t2, c1, c2);
        return;
    }
#endif
    ptrdiff_t s1 = 0, s2 = 0;
    for (ptrdiff_t i0 = 0; i0 < n; i0 += (ptrdiff_t)1 << 30) {
        const ptrdiff_t i1 = n - i0 < ((ptrdiff_t)1 << 30) ? n : i0 + ((ptrdiff_t)1 << 30);
        int32_t q1 = 0, q2 = 0; /* 32-bit lanes: vectorised */
        for (ptrdiff_t i = i0; i < i1; i++) {
            q1 += a[i] <= t1;
            q2 += a[i] <= t2;
        }
        s1 += q1;
        s2 += q2;
    }
    *c1 = s1;
    *c2 = s2;
}

/* Count the val(a, i) < lo into *below and copy those within [lo, hi]
 * to mid (in order; mid: n + 3 floats), their number into *m. With SSE2,
 * 4 values at a time: the in-bracket lanes are moved to the front by a
 * 16-entry table and all 4 stored, the count advancing by those kept
 * (no branches). The values are bit-identical to val(). */
static void bracket_pass(const float *restrict a, ptrdiff_t n, int dev, float center, float lo,
                         float hi, float *restrict mid, ptrdiff_t *below_out, ptrdiff_t *m_out)
{
#ifdef NCALC_AVX512
    if (have_avx512()) {
        bracket_pass_avx512(a, n, dev, center, lo, hi, mid, below_out, m_out);
        return;
    }
#endif
#ifdef NCALC_AVX2
    if (have_avx2()) {
        bracket_pass_avx2(a, n, dev, center, lo, hi, mid, below_out, m_out);
        return;
    }
#endif
    ptrdiff_t below = 0, m = 0, i = 0;
#ifdef NCALC_SSE2
    static const uint8_t order[16][4] = {
        {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {2, 0, 0, 0}, {0, 2, 0, 0},
        {1, 2, 0, 0}, {0, 1, 2, 0}, {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0},
        {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3}};
    static const uint8_t ones[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};
    const __m128 vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi), vc = _mm_set1_ps(center);
    const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    float lane[4];
    while (i + 4 <= n) {
    /* 32-bit lane counts: flushed every 2^30 values */
    const ptrdiff_t iend = n - i > ((ptrdiff_t)1 << 30) ? i + ((ptrdiff_t)1 << 30) : n;
    __m128i vb = _mm_setzero_si128();
    for (; i + 4 <= iend; i += 4) {
        __m128 v = _mm_loadu_ps(a + i);
        if (dev) v = _mm_and_ps(_mm_sub_ps(v, vc), absmask); /* fabsf(a - center) */
        vb = _mm_sub_epi32(vb, _mm_castps_si128(_mm_cmplt_ps(v, vlo)));
        const int bits = _mm_movemask_ps(_mm_and_ps(_mm_cmpge_ps(v, vlo), _mm_cmple_ps(v, vhi)));
        _mm_storeu_ps(lane, v);
        const uint8_t *o = order[bits];
        mid[m] = lane[o[0]];
        mid[m + 1] = lane[o[1]];
        mid[m + 2] = lane[o[2]];
        mid[m + 3] = lane[o[3]];
        m += ones[bits];
    }
    int32_t cb[4];
    _mm_storeu_si128((__m128i *)cb, vb);
    below += (ptrdiff_t)cb[0] + cb[1] + cb[2] + cb[3];
    }
#endif
    bracket_tail(a, i, n, dev, center, lo, hi, mid, below, m, below_out, m_out);
}

/* Smallest and largest of the finite a[0..n-1], n >= 1. */
static void min_max(const float *restrict a, ptrdiff_t n, float *mn, float *mx)
{
    float lo = a[0], hi = a[0];
    ptrdiff_t i0 = 1;
#ifdef NCALC_SSE2
    if (n >= 8) {
        __m128 vlo = _mm_loadu_ps(a), vhi = vlo;
        ptrdiff_t i = 4;
        for (; i + 4 <= n; i += 4) {
            const __m128 v = _mm_loadu_ps(a + i);
            vlo = _mm_min_ps(vlo, v);
            vhi = _mm_max_ps(vhi, v);
        }
        float l[4], h[4];
        _mm_storeu_ps(l, vlo);
        _mm_storeu_ps(h, vhi);
        for (int j = 0; j < 4; j++) {
            lo = l[j] < lo ? l[j] : lo;
            hi = h[j] > hi ? h[j] : hi;
        }
        i0 = i;
    }
#endif
    for (ptrdiff_t i = i0; i < n; i++) {
        lo = a[i] < lo ? a[i] : lo;
        hi = a[i] > hi ? a[i] : hi;
    }
    *mn = lo;
    *mx = hi;
}

#define FEW 16

/* Narrow [*lo, *hi] (count(<= *lo) = *clo <= k < count(<= *hi) = *chi,
 * counts over a[0..n-1]) until at most tol values lie in (*lo, *hi] or no
 * float lies between. Each pass counts (vectorised) the values <= two
 * thresholds: first interpolated around the k-th (the counts grow about
 * linearly over a narrow bracket), sqrt(count) ranks to either side; a
 * pass that does not halve the count in the bracket makes the next one a
 * plain bisection. Any thresholds keep the invariant: they only decide
 * the number of passes. */
static void narrow(const float *restrict a, ptrdiff_t n, ptrdiff_t k, ptrdiff_t tol, float *plo,
                   float *phi, ptrdiff_t *pclo, ptrdiff_t *pchi)
{
    float lo = *plo, hi = *phi;
    ptrdiff_t clo = *pclo, chi = *pchi;
    int interp = 1;
    for (int it = 0; it < 64 && chi - clo > tol; it++) {
        const float tm = 0.5f * lo + 0.5f * hi;
        if (!(tm > lo && tm < hi)) break; /* no float in between */
        float t1 = tm, t2 = tm;
        if (interp) {
            const double cnt = (double)(chi - clo), span = (double)hi - (double)lo;
            const double r = (double)(k - clo) + 0.5, w = sqrt(cnt) + 1.0;
            const double d1 = (double)lo + span * ((r - w) / cnt);
            const double d2 = (double)lo + span * ((r + w) / cnt);
            t1 = d1 > (double)lo ? (float)d1 : lo;
            t2 = d2 < (double)hi ? (float)d2 : hi;
            if (t1 < lo) t1 = lo; /* rounding to float */
            if (t2 > hi) t2 = hi;
            if (t2 < t1) t2 = t1;
        }
        ptrdiff_t c1, c2;
        if (t1 == t2) c1 = c2 = count_le(a, n, t1);
        else count_le2(a, n, t1, t2, &c1, &c2);
        const ptrdiff_t before = chi - clo;
        if (c1 > k) {
            hi = t1;
            chi = c1;
        } else if (c2 > k) {
            lo = t1;
            clo = c1;
            hi = t2;
            chi = c2;
        } else {
            lo = t2;
            clo = c2;
        }
        interp = 2 * (chi - clo) <= before;
    }
    *plo = lo;
    *phi = hi;
    *pclo = clo;
    *pchi = chi;
}

/* k-th smallest (0-based) of the finite a[0..n-1], all within [lo, hi],
 * exactly. The bracket is narrowed (narrow()) until at most FEW values
 * remain in (lo, hi]; those are copied out (branch-free) and sorted.
 * tmp: n floats; key: n words. */
static float kth_bisect_in(const float *restrict a, ptrdiff_t n, ptrdiff_t k, float lo, float hi,
                           float *restrict tmp, uint32_t *key)
{
    if (n <= FEW) {
        memcpy(tmp, a, sizeof(float) * (size_t)n);
        return quickselect(tmp, n, k, key);
    }
    ptrdiff_t clo = count_le(a, n, lo), chi = n; /* k-th in (lo, hi] when clo <= k */
    if (clo > k) return lo;
    narrow(a, n, k, FEW, &lo, &hi, &clo, &chi);
    /* the few values left in (lo, hi] = [next float above lo, hi] */
    ptrdiff_t below, m;
    bracket_pass(a, n, 0, 0.0f, nextafterf(lo, INFINITY), hi, tmp, &below, &m);
    return quickselect(tmp, m, k - clo, key);
}

/* The same, a[0..n-1] anywhere. */
static float kth_bisect(const float *restrict a, ptrdiff_t n, ptrdiff_t k, float *restrict tmp,
                        uint32_t *key)
{
    if (n <= FEW) {
        memcpy(tmp, a, sizeof(float) * (size_t)n);
        return quickselect(tmp, n, k, key);
    }
    float lo, hi;
    min_max(a, n, &lo, &hi);
    return kth_bisect_in(a, n, k, lo, hi, tmp, key);
}

/* Values lo <= hi with at most kl of a[0..n-1] below lo (lo = -inf when
 * kl < 0) and at most n - 1 - kh above hi (hi = +inf when kh >= n), for a
 * bracket about as narrow as [kl-th, kh-th smallest]: lo within tol ranks
 * below the kl-th, hi within tol above the kh-th. Both ends are searched
 * at once, each pass counting (vectorised) the values <= a threshold of
 * each: interpolated at the aimed rank, or halving the end's interval
 * after a pass that did not halve its count. */
static void rank_bracket(const float *restrict a, ptrdiff_t n, ptrdiff_t kl, ptrdiff_t kh,
                         float *plo, float *phi)
{
    float mn, mx;
    min_max(a, n, &mn, &mx);
    const ptrdiff_t tol = 2 + (kh - kl) / 8;
    const ptrdiff_t cmn = count_le(a, n, mn);
    float lo[2], hi[2];
    ptrdiff_t clo[2], chi[2], k[2] = {kl, kh};
    int active[2], interp[2] = {1, 1};
    for (int s = 0; s < 2; s++) {
        /* count(<= lo) <= k < count(<= hi) */
        lo[s] = mn;
        hi[s] = mx;
        clo[s] = cmn;
        chi[s] = n;
        active[s] = k[s] >= 0 && k[s] < n && cmn <= k[s];
        if (k[s] >= 0 && k[s] < n && cmn > k[s]) hi[s] = mn;
    }
    for (int it = 0; it < 64; it++) {
        float t[2] = {0.0f, 0.0f};
        for (int s = 0; s < 2; s++) {
            if (!active[s]) continue;
            /* done: lo within tol ranks below kl; hi within tol above kh */
            if (s == 0 ? clo[0] > kl - tol : chi[1] <= kh + 1 + tol) {
                active[s] = 0;
                continue;
            }
            const float tm = 0.5f * lo[s] + 0.5f * hi[s];
            if (!(tm > lo[s] && tm < hi[s])) { /* no float in between */
                active[s] = 0;
                continue;
            }
            t[s] = tm;
            if (interp[s]) {
                /* aim at the middle of the accepted ranks */
                const double aim = s == 0 ? (double)kl - 0.5 * (double)tol
                                          : (double)kh + 0.5 * (double)tol;
                const double f = (aim - (double)clo[s] + 0.5) / (double)(chi[s] - clo[s]);
                const double d = (double)lo[s] + ((double)hi[s] - (double)lo[s]) * f;
                if (d > (double)lo[s] && d < (double)hi[s]) {
                    const float td = (float)d;
                    if (td > lo[s] && td < hi[s]) t[s] = td;
                }
            }
        }
        if (!active[0] && !active[1]) break;
        ptrdiff_t c[2] = {0, 0};
        if (active[0] && active[1]) count_le2(a, n, t[0], t[1], &c[0], &c[1]);
        else if (active[0]) c[0] = count_le(a, n, t[0]);
        else c[1] = count_le(a, n, t[1]);
        for (int s = 0; s < 2; s++) {
            if (!active[s]) continue;
            const ptrdiff_t before = chi[s] - clo[s];
            if (c[s] > k[s]) { hi[s] = t[s]; chi[s] = c[s]; }
            else { lo[s] = t[s]; clo[s] = c[s]; }
            interp[s] = 2 * (chi[s] - clo[s]) <= before;
        }
    }
    /* fewer than kl values are < lo (<= k are <= lo); more than kh are
     * <= hi */
    if (kl >= 0 && kl < n) *plo = cmn > kl ? -INFINITY : lo[0];
    if (kh >= 0 && kh < n) *phi = hi[1];
}

#define SAMPLE 256

/* The sample size for n > 4 SAMPLE values: SAMPLE .. 16 SAMPLE, about
 * n / 16 (the bracket narrows as 1 / sqrt(sample)). */
static ptrdiff_t sample_size(ptrdiff_t n)
{
    return n / 16 < SAMPLE ? SAMPLE : (n / 16 > 16 * SAMPLE ? 16 * SAMPLE : n / 16);
}

/* samp[j] = val(a, i_j) at S regular positions i_j = (j + 1/2) n / S. */
static void take_sample(const float *a, ptrdiff_t n, ptrdiff_t S, int dev, float center,
                        float *samp)
{
    if (n <= 0x7fffffff) { /* 32.32 fixed point: i_j < n */
        const uint64_t step = ((uint64_t)n << 32) / (uint64_t)S;
        uint64_t pos = step >> 1;
        for (ptrdiff_t j = 0; j < S; j++, pos += step)
            samp[j] = val(a, (ptrdiff_t)(pos >> 32), dev, center);
    } else {
        const double step = (double)n / (double)S;
        for (ptrdiff_t j = 0; j < S; j++) {
            const ptrdiff_t idx = (ptrdiff_t)(((double)j + 0.5) * step);
            samp[j] = val(a, idx < n ? idx : n - 1, dev, center);
        }
    }
}

/* k-th smallest (0-based) of the n >= 2 finite values val(a, i), exactly.
 * samp (S values val(a, i) at regular positions; NULL: none) brackets the
 * rank: [lo, hi] holds the k-th value unless the sample is very
 * unrepresentative. One pass counts the values below lo and copies those
 * within [lo, hi] (branch-free), and only those few are selected from. If
 * the bracket missed, or without a sample, all the values are selected
 * from. The sample only decides how fast: the result is the exact k-th
 * value, the same for any sample. mid, tmp, key: n words of scratch. */
static float select_sampled(const float *a, ptrdiff_t n, ptrdiff_t k, int dev, float center,
                            const float *samp, ptrdiff_t S, float *mid, float *tmp, uint32_t *key)
{
    if (samp) {
        const double p = ((double)k + 0.5) / (double)n;
        const double ks = p * (double)S, d = 3.0 * sqrt((double)S * p * (1 - p)) + 2.0;
        const ptrdiff_t kl = (ptrdiff_t)floor(ks - d), kh = (ptrdiff_t)ceil(ks + d);
        float lo = -INFINITY, hi = INFINITY;
        rank_bracket(samp, S, kl, kh, &lo, &hi);
        ptrdiff_t below = 0, m = 0;
        bracket_pass(a, n, dev, center, lo, hi, mid, &below, &m);
        if (below <= k && k < below + m)
            return lo > -INFINITY && hi < INFINITY ? kth_bisect_in(mid, m, k - below, lo, hi, tmp, key)
                                                   : kth_bisect(mid, m, k - below, tmp, key);
    }
    for (ptrdiff_t i = 0; i < n; i++) mid[i] = val(a, i, dev, center);
    return kth_bisect(mid, n, k, tmp, key);
}

/* The same with a regular sample of a when n > 4 SAMPLE. */
static float select_bracketed(const float *a, ptrdiff_t n, ptrdiff_t k, int dev, float center,
                              float *mid, float *tmp, uint32_t *key)
{
    if (n > 4 * SAMPLE) {
        float samp[16 * SAMPLE];
        const ptrdiff_t S = sample_size(n);
        take_sample(a, n, S, dev, center, samp);
        return select_sampled(a, n, k, dev, center, samp, S, mid, tmp, key);
    }
    return select_sampled(a, n, k, dev, center, NULL, 0, mid, tmp, key);
}

/* 1.4826 * MAD of buf[0..m-1] (m >= 2). finite: no NaN or infinity in
 * buf; else the radix path (which orders them by their bits) is taken.
 * buf is left alone when finite; mid, tmp, key: m words of scratch. The
 * deviations' sample is the values' sample made deviations (the same
 * positions: the same floats as val(buf, i, 1, med)). */
static double mad_of(float *buf, ptrdiff_t m, int finite, float *mid, float *tmp, uint32_t *key)
{
    if (!finite) return mad_of_radix(buf, m, key);
    const ptrdiff_t k = (m - 1) / 2;
    if (m > 4 * SAMPLE) {
        float samp[16 * SAMPLE];
        const ptrdiff_t S = sample_size(m);
        take_sample(buf, m, S, 0, 0.0f, samp);
        const float med = select_sampled(buf, m, k, 0, 0.0f, samp, S, mid, tmp, key);
        for (ptrdiff_t j = 0; j < S; j++) samp[j] = fabsf(samp[j] - med);
        /* the same deviations as fabsf(buf[i] - med) in the radix path */
        return 1.4826 * (double)select_sampled(buf, m, k, 1, med, samp, S, mid, tmp, key);
    }
    const float med = select_sampled(buf, m, k, 0, 0.0f, NULL, 0, mid, tmp, key);
    return 1.4826 * (double)select_sampled(buf, m, k, 1, med, NULL, 0, mid, tmp, key);
}

/* *all = every one of m[0..n-1] (n >= 1) is nonzero, *none = every one is
 * zero. With SSE2, 16 bytes at a time (the last 16 overlapping the
 * previous ones when n is not a multiple of 16: reads stay in m[0..n-1]). */
static inline void mask_run(const uint8_t *restrict m, ptrdiff_t n, int *all, int *none)
{
#ifdef NCALC_SSE2
    if (n >= 16) {
        const __m128i zero = _mm_setzero_si128();
        unsigned zeros = 0, nonzeros = 0; /* OR of the per-byte zero / nonzero bits */
        ptrdiff_t c = 0;
        for (; c + 16 <= n; c += 16) {
            const unsigned z = (unsigned)_mm_movemask_epi8(
                _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(m + c)), zero));
            zeros |= z;
            nonzeros |= z ^ 0xffffu;
        }
        if (c < n) {
            const unsigned z = (unsigned)_mm_movemask_epi8(
                _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(m + n - 16)), zero));
            zeros |= z;
            nonzeros |= z ^ 0xffffu;
        }
        *all = zeros == 0;
        *none = nonzeros == 0;
        return;
    }
#endif
    int32_t in = 0;
    for (ptrdiff_t c = 0; c < n; c++) in += m[c] != 0;
    *all = in == n;
    *none = in == 0;
}

/* Gather the masked pixels of block [r0,r1) x [c0,c1) at the given stride
 * (branch-free); *finite gets 0 if one of them is NaN or infinite. */
static ptrdiff_t gather(const float *x, ptrdiff_t cols, const uint8_t *mask, ptrdiff_t mask_ld,
                        ptrdiff_t mask_r0, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t c0, ptrdiff_t c1,
                        ptrdiff_t stride, float *buf, int *finite)
{
    ptrdiff_t m = 0;
    int bad = 0;
    for (ptrdiff_t r = r0; r < r1; r += stride) {
        const float *restrict row = x + r * cols;
        if (!mask) {
            if (stride == 1) {
                for (ptrdiff_t c = c0; c < c1; c++) {
                    buf[m + c - c0] = row[c];
                    bad |= !(fabsf(row[c]) <= FLT_MAX);
                }
                m += c1 - c0;
            } else {
                for (ptrdiff_t c = c0; c < c1; c += stride) {
                    buf[m++] = row[c];
                    bad |= !(fabsf(row[c]) <= FLT_MAX);
                }
            }
        } else {
            const uint8_t *restrict mrow = mask + (r - mask_r0) * mask_ld;
            int all = 0, none = 0;
            /* runs inside or outside the mask (most): a copy, or nothing */
            if (stride == 1) mask_run(mrow + c0, c1 - c0, &all, &none);
            if (none) continue;
            if (all) {
                for (ptrdiff_t c = c0; c < c1; c++) {
                    buf[m + c - c0] = row[c];
                    bad |= !(fabsf(row[c]) <= FLT_MAX);
                }
                m += c1 - c0;
                continue;
            }
            for (ptrdiff_t c = c0; c < c1; c += stride) {
                const int in = mrow[c] != 0;
                buf[m] = row[c];
                m += in;
                bad |= in & !(fabsf(row[c]) <= FLT_MAX);
            }
        }
    }
    *finite = !bad;
    return m;
}

double ncalc_mad_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                       const uint8_t *mask, ptrdiff_t stride)
{
    if (!x || rows < 1 || cols < 1 || stride < 1) return NAN;
    ptrdiff_t cap = ((rows + stride - 1) / stride) * ((cols + stride - 1) / stride);
    /* one more slot: the branch-free gather writes one past the last kept */
    float *buf = malloc(sizeof(float) * (size_t)(cap + 1));
    float *mid = malloc(sizeof(float) * (size_t)(cap + 4)); /* + 3: see bracket_pass */
    float *tmp = malloc(sizeof(float) * (size_t)(cap + 4));
    uint32_t *key = malloc(sizeof(uint32_t) * (size_t)cap);
    if (!buf || !mid || !tmp || !key) { free(buf); free(mid); free(tmp); free(key); return -1.0; }
    int finite;
    ptrdiff_t m = gather(x, cols, mask, cols, 0, 0, rows, 0, cols, stride, buf, &finite);
    double s = m >= 2 ? mad_of(buf, m, finite, mid, tmp, key) : NAN;
    free(buf);
    free(mid);
    free(tmp);
    free(key);
    return s;
}

static int tile_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                      const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t stride,
                      ptrdiff_t min_count, float *grid, int nthreads);

int ncalc_tile_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                     const uint8_t *mask, ptrdiff_t tile, ptrdiff_t min_count,
                     float *grid, int nthreads)
{
    return tile_noise(x, rows, cols, mask, cols, tile, 1, min_count, grid, nthreads);
}

int ncalc_tile_noise_ld(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                        const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t min_count,
                        float *grid, int nthreads)
{
    return tile_noise(x, rows, cols, mask, mask_ld, tile, 1, min_count, grid, nthreads);
}

int ncalc_tile_noise_strided(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                             const uint8_t *mask, ptrdiff_t tile, ptrdiff_t stride,
                             ptrdiff_t min_count, float *grid, int nthreads)
{
    return tile_noise(x, rows, cols, mask, cols, tile, stride, min_count, grid, nthreads);
}

/* One thread's scratch for ncalc_tile_band: the gathered pixels of a band
 * of tiles and the selection's buffers. */
struct ncalc_tile_scratch {
    float *buf, *mid, *tmp;
    ptrdiff_t *cnt;
    int *fin;
    uint32_t *key;
    size_t cap; /* pixels of one tile (sampled) */
};

void ncalc_tile_scratch_free(ncalc_tile_scratch *s)
{
    if (!s) return;
    ncalc_buffer_put(s->buf);
    free(s->cnt);
    free(s->fin);
    free(s->mid);
    free(s->tmp);
    free(s->key);
    free(s);
}

ncalc_tile_scratch *ncalc_tile_scratch_new(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t tile,
                                           ptrdiff_t stride)
{
    if (rows < 1 || cols < 1 || tile < 1 || stride < 1) return NULL;
    const ptrdiff_t gw = (cols + tile - 1) / tile;
    const ptrdiff_t th = tile < rows ? tile : rows, tw = tile < cols ? tile : cols;
    ncalc_tile_scratch *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->cap = (size_t)((th + stride - 1) / stride) * (size_t)((tw + stride - 1) / stride);
    /* (from the pool: about a megabyte a thread, whose fresh pages would
     * be faulted in on every call) */
    s->buf = ncalc_buffer_get(sizeof(float) * s->cap * (size_t)gw);
    s->cnt = malloc(sizeof(ptrdiff_t) * (size_t)gw);
    s->fin = malloc(sizeof(int) * (size_t)gw);
    s->mid = malloc(sizeof(float) * (s->cap + 4)); /* + 3: see bracket_pass */
    s->tmp = malloc(sizeof(float) * (s->cap + 4));
    s->key = malloc(sizeof(uint32_t) * s->cap);
    if (!s->buf || !s->cnt || !s->fin || !s->mid || !s->tmp || !s->key) {
        ncalc_tile_scratch_free(s);
        return NULL;
    }
    return s;
}

/* Row br of the grid of ncalc_tile_noise_strided: the pixels of all the
 * band's tiles gathered in one sweep down its rows (a streaming read, where
 * tile by tile would read short runs of widely spaced rows), then each
 * tile's noise. */
void ncalc_tile_band(const float *x, ptrdiff_t rows, ptrdiff_t cols, const uint8_t *mask,
                     ptrdiff_t mask_ld, ptrdiff_t mask_r0, ptrdiff_t tile, ptrdiff_t stride,
                     ptrdiff_t min_count, ptrdiff_t br, float *grid_row, ncalc_tile_scratch *s)
{
    if (min_count < 2) min_count = 2;
    const ptrdiff_t gw = (cols + tile - 1) / tile;
    const ptrdiff_t r0 = br * tile, r1 = r0 + tile < rows ? r0 + tile : rows;
    for (ptrdiff_t bc = 0; bc < gw; bc++) {
        s->cnt[bc] = 0;
        s->fin[bc] = 1;
    }
    /* row by row, every tile's part at once (AVX-512, else AVX2) */
    int by_row = 0;
#ifdef NCALC_AVX512
    if (stride == 1 && have_avx512bw()) {
        by_row = 1;
        for (ptrdiff_t r = r0; r < r1; r++)
            band_row_avx512(x + r * cols, mask ? mask + (r - mask_r0) * mask_ld : NULL, cols, tile, gw,
                            s->buf, s->cap, s->cnt, s->fin);
    }
#endif
#ifdef NCALC_AVX2
    if (!by_row && stride == 1 && have_avx2()) {
        by_row = 1;
        for (ptrdiff_t r = r0; r < r1; r++)
            band_row_avx2(x + r * cols, mask ? mask + (r - mask_r0) * mask_ld : NULL, cols, tile, gw,
                          s->buf, s->cap, s->cnt, s->fin);
    }
#endif
    for (ptrdiff_t r = r0; r < r1 && !by_row; r += stride)
        for (ptrdiff_t bc = 0; bc < gw; bc++) {
            const ptrdiff_t c0 = bc * tile, c1 = c0 + tile < cols ? c0 + tile : cols;
            int finite;
            s->cnt[bc] += gather(x, cols, mask, mask_ld, mask_r0, r, r + 1, c0, c1, stride,
                                 s->buf + (size_t)bc * s->cap + s->cnt[bc], &finite);
            s->fin[bc] &= finite;
        }
    for (ptrdiff_t bc = 0; bc < gw; bc++)
        grid_row[bc] = s->cnt[bc] >= min_count
            ? (float)mad_of(s->buf + (size_t)bc * s->cap, s->cnt[bc], s->fin[bc], s->mid, s->tmp,
                            s->key)
            : NAN;
}

/* ncalc_tile_noise_strided with the mask's rows mask_ld bytes apart. */
static int tile_noise(const float *x, ptrdiff_t rows, ptrdiff_t cols,
                      const uint8_t *mask, ptrdiff_t mask_ld, ptrdiff_t tile, ptrdiff_t stride,
                      ptrdiff_t min_count, float *grid, int nthreads)
{
    if (!x || !grid || rows < 1 || cols < 1 || tile < 1 || stride < 1 || (mask && mask_ld < cols))
        return NCALC_EINVAL;
    const ptrdiff_t gh = (rows + tile - 1) / tile, gw = (cols + tile - 1) / tile;
    int status = NCALC_OK;
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
    /* a thread takes a band of tiles (tile rows of the image) at a time */
#pragma omp parallel num_threads(nt)
    {
        ncalc_tile_scratch *s = ncalc_tile_scratch_new(rows, cols, tile, stride);
        if (!s) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (ptrdiff_t br = 0; br < gh; br++)
            if (s) ncalc_tile_band(x, rows, cols, mask, mask_ld, 0, tile, stride, min_count, br,
                                   grid + br * gw, s);
        ncalc_tile_scratch_free(s);
    }
    return status;
}

/* ------------------------------------------------------------------------
 * Noise-level function (napari_calc.core.score.noise_level_function): the
 * samples, and their binned medians, with NumPy's float32 arithmetic and
 * numpy.median's definition, so that the Python reference and this give
 * bit-identical results.
 * ------------------------------------------------------------------------ */


static inline float pix(const void *img, int dtype, ptrdiff_t i)
{
    return dtype == NCALC_U16 ? (float)((const uint16_t *)img)[i] : ((const float *)img)[i];
}

ptrdiff_t ncalc_nlf_samples(const void *img, int dtype, ptrdiff_t planes, ptrdiff_t plane_ld,
                            ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld, ptrdiff_t k,
                            const uint8_t *smask, float *resid, float *level, int nthreads)
{
    if (!img || !resid || !level || (dtype != NCALC_U16 && dtype != NCALC_F32) || planes < 1 ||
        rows < 3 || cols < 3 || ld < cols || k < 1 || (planes > 1 && plane_ld < rows * ld))
        return NCALC_EINVAL;
    const ptrdiff_t nr = (rows - 2 + k - 1) / k, nc = (cols - 2 + k - 1) / k;
    /* first output of sample row i of plane 0: masked samples before it */
    ptrdiff_t *start = malloc(sizeof(ptrdiff_t) * (size_t)(nr + 1));
    if (!start) return NCALC_ENOMEM;
    start[0] = 0;
    for (ptrdiff_t i = 0; i < nr; i++) {
        ptrdiff_t n = nc;
        if (smask) {
            n = 0;
            for (ptrdiff_t j = 0; j < nc; j++) n += smask[i * nc + j] != 0;
        }
        start[i + 1] = start[i] + n;
    }
    const ptrdiff_t per_plane = start[nr];
    const float quarter = (float)0.25, fifth = (float)0.2; /* np.float32(0.25), np.float32(0.2) */
    /* sample rows in parallel: each writes its own run of the output */
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (planes * per_plane > 16384)
    for (ptrdiff_t pi = 0; pi < planes * nr; pi++) {
        const ptrdiff_t p = pi / nr, i = pi % nr, r = 1 + i * k;
        const char *base = (const char *)img + (size_t)(p * plane_ld) * (dtype == NCALC_U16 ? 2 : 4);
        const uint8_t *mrow = smask ? smask + i * nc : NULL;
        float *ro = resid + p * per_plane + start[i], *lo = level + p * per_plane + start[i];
        ptrdiff_t m = 0;
        for (ptrdiff_t j = 0; j < nc; j++) {
            if (mrow && !mrow[j]) continue;
            const ptrdiff_t c = 1 + j * k, o = r * ld + c;
            const float x = pix(base, dtype, o);
            /* NumPy: (up + down + left + right) * 0.25, left to right */
            const float nb = (((pix(base, dtype, o - ld) + pix(base, dtype, o + ld)) +
                               pix(base, dtype, o - 1)) + pix(base, dtype, o + 1)) * quarter;
            ro[m] = x - nb;
            lo[m] = (x + 4.0f * nb) * fifth;
            m++;
        }
    }
    free(start);
    return planes * per_plane;
}

/* numpy.median of the n >= 1 finite values val(a, i, dev, center): the
 * middle value, or for even n the float32 mean of the two middle ones,
 * summed as numpy's add.reduce does (from 0: +0 + -0 is +0). */
static float np_median(const float *a, ptrdiff_t n, int dev, float center, float *mid, float *tmp,
                       uint32_t *key)
{
    if (n == 1) return (0.0f + val(a, 0, dev, center)) / 1.0f;
    const ptrdiff_t h = n / 2;
    const float hi = select_bracketed(a, n, h, dev, center, mid, tmp, key);
    if (n % 2) return (0.0f + hi) / 1.0f;
    const float lo = select_bracketed(a, n, h - 1, dev, center, mid, tmp, key);
    return ((0.0f + lo) + hi) / 2.0f;
}

float ncalc_median_f32(const float *a, ptrdiff_t n, float *scratch)
{
    return np_median(a, n, 0, 0.0f, scratch, scratch + n, (uint32_t *)(scratch + 2 * n));
}

/* target_clones needs GCC >= 6 and ifunc support (glibc on x86-64 Linux). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) && (__GNUC__ >= 6) && !defined(NCALC_NO_CLONES)
#define NCALC_BIN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NCALC_BIN_CLONES
#endif

/* bin[i] = the number of thr[0 .. nedges) that lv[i] reaches (>=), i < n:
 * edge by edge over the chunk, so that the compares vectorise. */
NCALC_BIN_CLONES
static void bin_chunk(const float *restrict lv, ptrdiff_t n, const float *thr, int nedges,
                      uint8_t *restrict bin)
{
    for (ptrdiff_t i = 0; i < n; i++) bin[i] = 0;
    for (int e = 0; e < nedges; e++) {
        const float te = thr[e];
        for (ptrdiff_t i = 0; i < n; i++) bin[i] += (uint8_t)(lv[i] >= te);
    }
}

int ncalc_nlf_bins(const float *level, const float *resid, ptrdiff_t n, const double *edges,
                   int nedges, ptrdiff_t *count, float *lev_median, float *resid_mad, int nthreads)
{
    if (!level || !resid || n < 0 || nedges < 0 || nedges > 254 || (nedges > 0 && !edges) ||
        !count || !lev_median || !resid_mad)
        return NCALC_EINVAL;
    for (int e = 1; e < nedges; e++)
        if (!(edges[e] >= edges[e - 1])) return NCALC_EINVAL;
    const int nb = nedges + 1;
    /* edges[e] <= (double)v  <=>  v >= thr[e], the smallest float >= edges[e]
     * (for finite v; beyond the float range +inf or -FLT_MAX, so that no
     * double out of range is converted; a NaN edge gives a NaN threshold,
     * never reached) */
    float thr[254];
    for (int e = 0; e < nedges; e++) {
        const double d = edges[e];
        float f;
        if (d > FLT_MAX) {
            f = INFINITY;
        } else if (d < -FLT_MAX) {
            f = -FLT_MAX;
        } else {
            f = (float)d; /* the nearest float: d's lower or upper neighbour */
            if ((double)f < d) f = nextafterf(f, INFINITY);
        }
        thr[e] = f;
    }
    int nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    if (nt > SORT_MAX_THREADS) nt = SORT_MAX_THREADS;
    if (n <= 16384 || nt < 1) nt = 1;
    uint8_t *bin = malloc((size_t)(n ? n : 1));
    float *gl = ncalc_buffer_get(sizeof(float) * (size_t)(n ? n : 1));
    float *gr = ncalc_buffer_get(sizeof(float) * (size_t)(n ? n : 1));
    ptrdiff_t *off = malloc(sizeof(ptrdiff_t) * (size_t)(nb + 1));
    /* per thread, the counts of each bin in its share of the samples */
    ptrdiff_t *tc = malloc(sizeof(ptrdiff_t) * (size_t)nb * (size_t)nt);
    if (!bin || !gl || !gr || !off || !tc) {
        free(bin); ncalc_buffer_put(gl); ncalc_buffer_put(gr); free(off); free(tc);
        return NCALC_ENOMEM;
    }
    int bad = 0;
    /* bin = number of edges <= level (numpy.searchsorted(edges, level,
     * side="right") for sorted edges), counted edge by edge over chunks of
     * the thread's share (float compares the compiler vectorises); then a
     * stable counting sort by bin, each thread moving its share to the
     * places all threads' counts give it (the serial order) */
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        int T, t;
        ptrdiff_t lo, hi;
        ncalc_thread_share(n, &T, &t, &lo, &hi);
        int bad_here = 0;
        for (ptrdiff_t i = lo; i < hi; i++)
            bad_here |= !(fabsf(level[i]) <= FLT_MAX) | !(fabsf(resid[i]) <= FLT_MAX);
        const int stop = ncalc_team_any(bad_here, &bad);
        ptrdiff_t *c = tc + (size_t)nb * (size_t)t;
        if (!stop) {
            for (ptrdiff_t i0 = lo; i0 < hi; i0 += 4096)
                bin_chunk(level + i0, hi - i0 < 4096 ? hi - i0 : 4096, thr, nedges, bin + i0);
            for (int b = 0; b < nb; b++) c[b] = 0;
            for (ptrdiff_t i = lo; i < hi; i++) c[bin[i]]++;
        }
#pragma omp barrier
        if (!stop) {
            ptrdiff_t pos[255], base = 0;
            for (int b = 0; b < nb; b++) {
                ptrdiff_t mine = base;
                for (int u = 0; u < T; u++) {
                    const ptrdiff_t cu = tc[(size_t)nb * (size_t)u + (size_t)b];
                    if (u < t) mine += cu;
                    base += cu;
                }
                pos[b] = mine;
                if (t == 0) {
                    off[b] = mine;
                    count[b] = 0;
                    for (int u = 0; u < T; u++) count[b] += tc[(size_t)nb * (size_t)u + (size_t)b];
                }
            }
            if (t == 0) off[nb] = n;
            for (ptrdiff_t i = lo; i < hi; i++) {
                const ptrdiff_t q = pos[bin[i]]++;
                gl[q] = level[i];
                gr[q] = resid[i];
            }
        }
    }
    free(bin);
    free(tc);
    if (bad) {
        ncalc_buffer_put(gl); ncalc_buffer_put(gr); free(off);
        return NCALC_EINVAL;
    }
    nt = nthreads > 0 ? nthreads : ncalc_max_threads();
    ptrdiff_t cap = 1;
    for (int b = 0; b < nb; b++) cap = count[b] > cap ? count[b] : cap;
    int status = NCALC_OK;
#pragma omp parallel num_threads(nt)
    {
        float *mid = malloc(sizeof(float) * (size_t)(cap + 4)); /* + 3: see bracket_pass */
        float *tmp = malloc(sizeof(float) * (size_t)(cap + 4));
        uint32_t *key = malloc(sizeof(uint32_t) * (size_t)cap);
        const int ok = mid && tmp && key;
        if (!ok) {
#pragma omp atomic write
            status = NCALC_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < nb; b++) {
            if (!ok) continue;
            const ptrdiff_t m = count[b];
            if (m == 0) {
                lev_median[b] = NAN;
                resid_mad[b] = NAN;
                continue;
            }
            lev_median[b] = np_median(gl + off[b], m, 0, 0.0f, mid, tmp, key);
            const float med = np_median(gr + off[b], m, 0, 0.0f, mid, tmp, key);
            resid_mad[b] = np_median(gr + off[b], m, 1, med, mid, tmp, key);
        }
        free(mid);
        free(tmp);
        free(key);
    }
    ncalc_buffer_put(gl);
    ncalc_buffer_put(gr);
    free(off);
    return status;
}

/* ------------------------------------------------------------------------
 * The noise-level function's C steps in one call: the samples, the
 * quantile edges of their levels (the order statistics numpy.quantile
 * reads, with its arithmetic) and the binned medians. Run by detect on one
 * of the DoG's threads while the others filter (ncalc_dog_noise_nms_side).
 * ------------------------------------------------------------------------ */

/* Linear bins of the order statistics below: enough that the bins holding
 * the wanted ranks hold few values, few enough to stay in L1. */
#define OS_BINS 4096

/* The bin of v in [mn, mn + OS_BINS / scale): a non-decreasing function of
 * v (IEEE subtraction and product are monotone, as is the truncation), so
 * that a value in a lower bin is smaller than any value in a higher one. */
static inline int os_bin(float v, float mn, float scale)
{
    const float t = (v - mn) * scale;
    return t < (float)OS_BINS ? (int)t : OS_BINS - 1;
}

/* val[i] = the rank[i]-th smallest (0-based, 0 <= rank[i] < n) of the n >= 1
 * values x, exactly as in the sorted copy ncalc_sort_f32 makes (-0 before
 * +0), for i < nr. Three passes instead of a sort: the range, a histogram
 * of OS_BINS linear bins, and the values of the bins holding a wanted
 * rank, copied out and sorted. NCALC_EINVAL if a value is not finite
 * (nothing is written then). */
static int order_stats_f32(const float *x, ptrdiff_t n, const ptrdiff_t *rank, int nr, float *val)
{
    float mn = x[0], mx = x[0];
    int bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const float v = x[i];
        bad |= !(fabsf(v) <= FLT_MAX);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    if (bad) return NCALC_EINVAL;
    /* A range that overflows (mx - mn = +inf), or too small for a finite
     * scale, gives scale 0: every value in bin 0, except those whose own
     * v - mn overflows, in the last bin (the largest values: still in
     * order). Only slower: the wanted bins then hold most values. */
    const float span = mx - mn;
    const float scale = span > 0 && (float)OS_BINS / span <= FLT_MAX ? (float)OS_BINS / span : 0.0f;
    ptrdiff_t *cnt = calloc(OS_BINS + 1, sizeof(ptrdiff_t));
    uint8_t *want = calloc(OS_BINS, 1);
    int *rb = malloc(sizeof(int) * (size_t)(nr > 0 ? nr : 1));
    ptrdiff_t *first = malloc(sizeof(ptrdiff_t) * OS_BINS);
    if (!cnt || !want || !rb || !first) {
        free(cnt); free(want); free(rb); free(first);
        return NCALC_ENOMEM;
    }
    for (ptrdiff_t i = 0; i < n; i++) cnt[os_bin(x[i], mn, scale)]++;
    /* cnt[b] -> the number of values in the bins below b */
    ptrdiff_t below = 0;
    for (int b = 0; b <= OS_BINS; b++) {
        const ptrdiff_t c = cnt[b];
        cnt[b] = below;
        below += c;
    }
    /* the bin of each wanted rank: the last b with cnt[b] <= rank */
    for (int i = 0; i < nr; i++) {
        int lo = 0, hi = OS_BINS - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (cnt[mid] <= rank[i]) lo = mid; else hi = mid - 1;
        }
        rb[i] = lo;
        want[lo] = 1;
    }
    /* first[b]: the values of the wanted bins below b (their place in the
     * sorted copy of the wanted bins' values) */
    ptrdiff_t m = 0;
    for (int b = 0; b < OS_BINS; b++) {
        first[b] = m;
        if (want[b]) m += cnt[b + 1] - cnt[b];
    }
    float *buf = malloc(sizeof(float) * (size_t)(m + 1)); /* + 1: the branch-free copy */
    float *srt = malloc(sizeof(float) * (size_t)(m > 0 ? m : 1));
    int st = buf && srt ? NCALC_OK : NCALC_ENOMEM;
    if (st == NCALC_OK) {
        ptrdiff_t j = 0;
        for (ptrdiff_t i = 0; i < n; i++) {
            const float v = x[i];
            buf[j] = v;
            j += want[os_bin(v, mn, scale)];
        }
        st = ncalc_sort_f32(buf, m, srt, 1);
    }
    if (st == NCALC_OK)
        for (int i = 0; i < nr; i++) val[i] = srt[first[rb[i]] + (rank[i] - cnt[rb[i]])];
    free(cnt); free(want); free(rb); free(first); free(buf); free(srt);
    return st;
}

int ncalc_nlf_fit(const void *img, int dtype, ptrdiff_t planes, ptrdiff_t plane_ld, ptrdiff_t rows,
                  ptrdiff_t cols, ptrdiff_t ld, ptrdiff_t k, const uint8_t *smask, int max_bins,
                  float *resid, float *level, ptrdiff_t *n_out, int *nbins_out,
                  ptrdiff_t *count, float *lev_median, float *resid_mad, int nthreads)
{
    if (!n_out || !nbins_out || max_bins < 1 || max_bins > 255 || !count || !lev_median ||
        !resid_mad)
        return NCALC_EINVAL;
    *n_out = 0;
    *nbins_out = 0;
    const ptrdiff_t n = ncalc_nlf_samples(img, dtype, planes, plane_ld, rows, cols, ld, k, smask, resid,
                                          level, nthreads);
    if (n < 0) return (int)n;
    *n_out = n;
    if (n < 50) return NCALC_OK; /* too few for bins: the caller's own estimate */
    const ptrdiff_t by_count = n / 500;
    const int nb = (int)(by_count < 1 ? 1 : by_count < max_bins ? by_count : max_bins);
    /* numpy.quantile(sorted, i / nb) for i = 1 .. nb - 1, method "linear"
     * (NumPy 2): v = (n - 1) q, i = floor(v), j = i + 1, both the last
     * index where v >= n - 1 (the weight then v + 1, from index -1),
     * g = v - i, d = b - a in float32; a + d g where g < 0.5, else
     * b - d (1 - g), in float64. sorted[i] and sorted[j] are the order
     * statistics of those ranks (order_stats_f32: no sort). */
    double edges[254], gs[254];
    ptrdiff_t rank[2 * 254];
    float os[2 * 254];
    for (int e = 1; e < nb; e++) {
        const double q = (double)e / (double)nb;
        const double v = (double)(n - 1) * q;
        double fi = floor(v);
        ptrdiff_t i = (ptrdiff_t)fi, j = i + 1;
        if (v >= (double)(n - 1)) {
            fi = -1.0;
            i = j = n - 1;
        }
        gs[e - 1] = v - fi;
        rank[2 * (e - 1)] = i;
        rank[2 * (e - 1) + 1] = j;
    }
    int st = NCALC_OK;
    if (nb > 1) st = order_stats_f32(level, n, rank, 2 * (nb - 1), os);
    if (st != NCALC_OK) return st;
    for (int e = 1; e < nb; e++) {
        const double g = gs[e - 1];
        const float a = os[2 * (e - 1)], b = os[2 * (e - 1) + 1];
        const float d = b - a;
        edges[e - 1] = g < 0.5 ? (double)a + (double)d * g : (double)b - (double)d * (1.0 - g);
    }
    st = ncalc_nlf_bins(level, resid, n, edges, nb - 1, count, lev_median, resid_mad, nthreads);
    if (st != NCALC_OK) return st;
    *nbins_out = nb;
    return NCALC_OK;
}

/* numpy.minimum / numpy.maximum of two doubles: NaN if either is NaN. */
static inline double np_min(double a, double b) { return isnan(a) ? a : isnan(b) ? b : a < b ? a : b; }
static inline double np_max(double a, double b) { return isnan(a) ? a : isnan(b) ? b : a > b ? a : b; }

int ncalc_nlf_curve(const ptrdiff_t *count, const float *lev_median, const float *resid_mad, int nbins,
                    double *lev, double *sd, int *m_out)
{
    if (nbins < 0 || !m_out || (nbins > 0 && (!count || !lev_median || !resid_mad || !lev || !sd)))
        return NCALC_EINVAL;
    /* the bins with samples: level and sd = 1.4826 MAD / sqrt(1.25) */
    const double root = sqrt(1.25);
    int m = 0;
    for (int b = 0; b < nbins; b++)
        if (count[b] > 0) {
            lev[m] = (double)lev_median[b];
            sd[m] = 1.4826 * (double)resid_mad[b] / root;
            m++;
        }
    if (m >= 3) { /* running median of 3, the ends repeated */
        double prev = sd[0];
        for (int i = 0; i < m; i++) {
            const double a = prev, x = sd[i], c = sd[i + 1 < m ? i + 1 : m - 1];
            prev = x;
            sd[i] = np_max(np_min(a, x), np_min(np_max(a, x), c));
        }
    }
    /* positive: at least the smallest positive value (1 if none) */
    double floor_ = 1.0;
    int any = 0;
    for (int i = 0; i < m; i++)
        if (sd[i] > 0 && (!any || sd[i] < floor_)) { floor_ = sd[i]; any = 1; }
    for (int i = 0; i < m; i++) sd[i] = np_max(sd[i], floor_);
    /* numpy.unique(lev, return_index=True): increasing, the first of equal
     * levels kept with its sd (a stable insertion sort: m <= 255) */
    for (int i = 1; i < m; i++) {
        const double lv = lev[i], sv = sd[i];
        int j = i;
        while (j > 0 && lev[j - 1] > lv) {
            lev[j] = lev[j - 1];
            sd[j] = sd[j - 1];
            j--;
        }
        lev[j] = lv;
        sd[j] = sv;
    }
    int u = 0;
    for (int i = 0; i < m; i++)
        if (u == 0 || lev[i] != lev[u - 1]) {
            lev[u] = lev[i];
            sd[u] = sd[i];
            u++;
        }
    *m_out = u;
    return NCALC_OK;
}
