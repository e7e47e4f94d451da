/*
 * nms.c -- non-maximum suppression with a (local) noise-scaled threshold.
 * See ncalc.h for the contract.
 */
#include "ncalc.h"

ptrdiff_t ncalc_nms(const float *resp, ptrdiff_t rows, ptrdiff_t cols,
                    const uint8_t *mask, const float *grid, ptrdiff_t tile,
                    float k, int radius,
                    int32_t *out_rows, int32_t *out_cols, ptrdiff_t max_out)
{
    if (!resp || rows < 1 || cols < 1 || radius < 0 || max_out < 0) return NCALC_EINVAL;
    if (grid && tile < 1) return NCALC_EINVAL;
    if (max_out > 0 && (!out_rows || !out_cols)) return NCALC_EINVAL;
    ptrdiff_t gw = grid ? (cols + tile - 1) / tile : 0;
    ptrdiff_t n = 0;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *row = resp + r * cols;
        const float *grow = grid ? grid + (r / tile) * gw : NULL;
        ptrdiff_t r0 = r - radius < 0 ? 0 : r - radius;
        ptrdiff_t r1 = r + radius >= rows ? rows - 1 : r + radius;
        for (ptrdiff_t c = 0; c < cols; c++) {
            float v = row[c];
            float thr = grow ? k * grow[c / tile] : k;
            if (!(v > thr)) continue; /* also rejects NaN thresholds */
            if (mask && !mask[r * cols + c]) continue;
            ptrdiff_t c0 = c - radius < 0 ? 0 : c - radius;
            ptrdiff_t c1 = c + radius >= cols ? cols - 1 : c + radius;
            int is_max = 1;
            for (ptrdiff_t rr = r0; rr <= r1 && is_max; rr++) {
                const float *q = resp + rr * cols;
                for (ptrdiff_t cc = c0; cc <= c1; cc++)
                    if (q[cc] > v) { is_max = 0; break; }
            }
            if (!is_max) continue;
            if (n < max_out) {
                out_rows[n] = (int32_t)r;
                out_cols[n] = (int32_t)c;
            }
            n++;
        }
    }
    return n;
}
