/* gemm_impl.h: the packed GEMM for one element type, included by gemm.c
 * once per dtype with T (element), V (SIMD vector of VL elements), VU (the
 * same, unaligned) and SUFFIX defined.
 *
 * The BLIS loop nest: B is packed in KC x NC blocks of NR-wide column
 * panels, A in MC x KC blocks of MR-tall row panels, and a micro-kernel
 * keeps an MR x NR tile of C in registers while it streams the two panels.
 * Transposed operands are read through strides while packing, so backward
 * never copies a transpose. */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

enum { FN(NR) = 2 * VL };

/* C[0:MR, 0:NR] (row stride ldc) += panel_a · panel_b, kc deep, or = when
 * overwrite (C's old values unread: the first block of a fresh product).
 * Each k-step reads MR values of A and NR of B, side by side; the next
 * step's are a_step and b_step elements on (MR and NR in packed panels).
 * Compiled once per ISA; the loader picks the best the CPU has. */
AG_TARGET_CLONES
static void FN(micro_kernel)(size_t kc, const T *restrict pa, size_t a_step, const T *restrict pb,
                             size_t b_step, T *restrict c, size_t ldc, bool overwrite)
{
    V zero = {0}, acc[GEMM_MR][2];
    /* fully unrolled, so the tile lives in registers */
#pragma GCC unroll 8
    for (int r = 0; r < GEMM_MR; r++)
        acc[r][0] = acc[r][1] = zero;
    for (size_t p = 0; p < kc; p++, pa += a_step, pb += b_step) {
        V b0 = *(const VU *)pb, b1 = *(const VU *)(pb + VL);
#pragma GCC unroll 8
        for (int r = 0; r < GEMM_MR; r++) {
            acc[r][0] += pa[r] * b0;
            acc[r][1] += pa[r] * b1;
        }
    }
    if (overwrite) {
#pragma GCC unroll 8
        for (int r = 0; r < GEMM_MR; r++) {
            VU *row = (VU *)(c + (size_t)r * ldc);
            row[0] = acc[r][0];
            row[1] = acc[r][1];
        }
        return;
    }
#pragma GCC unroll 8
    for (int r = 0; r < GEMM_MR; r++) {
        VU *row = (VU *)(c + (size_t)r * ldc);
        row[0] += acc[r][0];
        row[1] += acc[r][1];
    }
}

/* Packs A(i0:i0+mc, p0:p0+kc) into MR-row panels, zero-padding the last.
 * A full panel of a row-major A reads MR rows side by side, so each store
 * follows the one before; of a transposed A (rs == 1), MR contiguous
 * elements per step. */
static void FN(pack_a)(const gemm_op *A, size_t i0, size_t p0, size_t mc, size_t kc, T *pa)
{
    const T *a = A->data;
    for (size_t ir = 0; ir < mc; ir += GEMM_MR, pa += GEMM_MR * kc) {
        const T *base = a + (i0 + ir) * A->rs + p0 * A->cs;
        if (ir + GEMM_MR <= mc && A->cs == 1) {
            for (size_t p = 0; p < kc; p++)
                for (size_t r = 0; r < GEMM_MR; r++)
                    pa[p * GEMM_MR + r] = base[r * A->rs + p];
        } else if (ir + GEMM_MR <= mc && A->rs == 1) {
            for (size_t p = 0; p < kc; p++)
                memcpy(pa + p * GEMM_MR, base + p * A->cs, GEMM_MR * sizeof(T));
        } else { /* the last, short panel: h rows, then zeros */
            size_t h = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
            for (size_t p = 0; p < kc; p++) {
                for (size_t r = 0; r < h; r++)
                    pa[p * GEMM_MR + r] = base[r * A->rs + p * A->cs];
                for (size_t r = h; r < GEMM_MR; r++)
                    pa[p * GEMM_MR + r] = 0;
            }
        }
    }
}

/* Packs B(p0:p0+kc, j0:j0+nc) into NR-column panels, zero-padding the last.
 * A row-major B is read row by row, each row's NR-wide pieces going to
 * their panels: the reads stream through memory, where a panel at a time
 * would touch a new cache line on every row. A transposed B gives NR
 * contiguous columns per panel. */
static void FN(pack_b)(const gemm_op *B, size_t p0, size_t j0, size_t kc, size_t nc, T *pb)
{
    const T *b = B->data;
    if (B->cs == 1) { /* (copies of a constant size: a variable one becomes a slow rep movs) */
        size_t full = nc / FN(NR) * FN(NR), w = nc - full;
        for (size_t p = 0; p < kc; p++) {
            const T *row = b + (p0 + p) * B->rs + j0;
            for (size_t jr = 0; jr < full; jr += FN(NR))
                memcpy(pb + jr * kc + p * FN(NR), row + jr, FN(NR) * sizeof(T));
            T *dst = pb + full * kc + p * FN(NR);
            for (size_t c = 0; c < w; c++)
                dst[c] = row[full + c];
            for (size_t c = w; w && c < FN(NR); c++)
                dst[c] = 0;
        }
        return;
    }
    for (size_t jr = 0; jr < nc; jr += FN(NR)) {
        const T *base = b + p0 * B->rs + (j0 + jr) * B->cs;
        T *panel = pb + jr * kc;
        if (jr + FN(NR) <= nc && B->rs == 1) { /* transposed: columns are contiguous */
            for (size_t p = 0; p < kc; p++)
                for (size_t c = 0; c < FN(NR); c++)
                    panel[p * FN(NR) + c] = base[c * B->cs + p];
        } else {
            for (size_t p = 0; p < kc; p++)
                for (size_t c = 0; c < FN(NR); c++)
                    panel[p * FN(NR) + c] = jr + c < nc ? base[p * B->rs + c * B->cs] : 0;
        }
    }
}

/* Where the micro-kernel finds a block's panels of one operand: the first
 * `direct` rows (of A) or columns (of B), whole panels only, in place in
 * the operand from `at`, `step` elements apart per k-step; the rest in the
 * packed buffer. */
typedef struct {
    const T *at;
    size_t step, direct;
    const T *packed;
} FN(panels);

/* Panel x (a row of A's block, a column of B's) and its k-step; width is
 * MR or NR, the packed panels' step. */
static inline const T *FN(panel)(const FN(panels) *s, size_t x, size_t kc, size_t width,
                                 size_t *step)
{
    if (x < s->direct) {
        *step = s->step;
        return s->at + x;
    }
    *step = width;
    return s->packed + (x - s->direct) * kc;
}

/* One block: C(ic:ic+mc, jc:jc+nc) += A·B, kc deep (= when overwrite).
 * Edge tiles go through a scratch tile so the kernel always runs full size. */
static void FN(block)(size_t mc, size_t nc, size_t kc, const FN(panels) *A, const FN(panels) *B,
                      T *c, size_t ldc, bool overwrite)
{
    for (size_t jr = 0; jr < nc; jr += FN(NR)) {
        size_t b_step, a_step;
        const T *b = FN(panel)(B, jr, kc, FN(NR), &b_step);
        for (size_t ir = 0; ir < mc; ir += GEMM_MR) {
            const T *a = FN(panel)(A, ir, kc, GEMM_MR, &a_step);
            T *ct = c + ir * ldc + jr;
            if (ir + GEMM_MR <= mc && jr + FN(NR) <= nc) {
                FN(micro_kernel)(kc, a, a_step, b, b_step, ct, ldc, overwrite);
                continue;
            }
            T tile[GEMM_MR * FN(NR)] __attribute__((aligned(64)));
            FN(micro_kernel)(kc, a, a_step, b, b_step, tile, FN(NR), true);
            size_t rows = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
            size_t cols = nc - jr < FN(NR) ? nc - jr : FN(NR);
            for (size_t r = 0; r < rows; r++) {
                T *dst = ct + r * ldc;
                const T *src = tile + r * FN(NR);
                for (size_t j = 0; j < cols; j++)
                    dst[j] = (overwrite ? 0 : dst[j]) + src[j];
            }
        }
    }
}

/* C[m,n] (row stride ldc) += A·B with A, B read through their strides, or
 * = when overwrite (k > 0); pb and pa hold a packed B block and A block
 * (see scratch_elems).
 *
 * Packing pays when a panel is read many times: a B panel once per MR rows
 * of C, an A panel once per NR columns. When C has only a few rows (a
 * mini-batch of 10 through a layer) and B is row-major, its panels are
 * read in place instead, NR elements side by side on each row; likewise A
 * stored transposed when C has few columns. */
static void FN(gemm_packed)(size_t m, size_t n, size_t k, const gemm_op *A, const gemm_op *B,
                            T *C, size_t ldc, T *pb, T *pa, bool overwrite)
{
    bool b_in_place = B->cs == 1 && m <= 4 * GEMM_MR;
    bool a_in_place = A->rs == 1 && A->cs != 1 && n <= 4 * FN(NR);
    for (size_t jc = 0; jc < n; jc += GEMM_NC) {
        size_t nc = n - jc < GEMM_NC ? n - jc : GEMM_NC;
        for (size_t pc = 0; pc < k; pc += GEMM_KC) {
            size_t kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
            FN(panels) bp = {b_in_place ? (const T *)B->data + pc * B->rs + jc : NULL, B->rs,
                             b_in_place ? nc / FN(NR) * FN(NR) : 0, pb};
            FN(pack_b)(B, pc, jc + bp.direct, kc, nc - bp.direct, pb);
            for (size_t ic = 0; ic < m; ic += GEMM_MC) {
                size_t mc = m - ic < GEMM_MC ? m - ic : GEMM_MC;
                FN(panels) ap = {a_in_place ? (const T *)A->data + ic + pc * A->cs : NULL, A->cs,
                                 a_in_place ? mc / GEMM_MR * GEMM_MR : 0, pa};
                FN(pack_a)(A, ic + ap.direct, pc, mc - ap.direct, kc, pa);
                FN(block)(mc, nc, kc, &ap, &bp, C + ic * ldc + jc, ldc, overwrite && pc == 0);
            }
        }
    }
}

#undef FN
#undef CAT
#undef CAT_
