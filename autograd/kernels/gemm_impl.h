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
 * k-step p reads A's MR values at pa[r·a_rs + p·a_step] and B's NR values
 * side by side at pb[p·b_step]: a packed A panel has a_rs = 1 and
 * a_step = MR, a packed B panel b_step = NR. */
static inline __attribute__((always_inline)) void
FN(tile)(size_t kc, const T *restrict pa, size_t a_rs, size_t a_step, const T *restrict pb,
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
            acc[r][0] += pa[r * a_rs] * b0;
            acc[r][1] += pa[r * a_rs] * b1;
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

/* The micro-kernel, compiled once per ISA (the loader picks the best the
 * CPU has), in two instances of the tile above: A's MR values side by side
 * (packed, or stored transposed), and A's rows read in place. */
AG_TARGET_CLONES
static void FN(micro_kernel)(size_t kc, const T *pa, size_t a_step, const T *pb, size_t b_step,
                             T *c, size_t ldc, bool overwrite)
{
    FN(tile)(kc, pa, 1, a_step, pb, b_step, c, ldc, overwrite);
}

AG_TARGET_CLONES
static void FN(micro_kernel_rows)(size_t kc, const T *pa, size_t a_rs, const T *pb, size_t b_step,
                                  T *c, size_t ldc, bool overwrite)
{
    FN(tile)(kc, pa, a_rs, 1, pb, b_step, c, ldc, overwrite);
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
            if (w == 0)
                continue;
            T *dst = pb + full * kc + p * FN(NR); /* the last, narrow panel */
            for (size_t c = 0; c < w; c++)
                dst[c] = row[full + c];
            for (size_t c = w; c < FN(NR); c++)
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
 * the operand: row (column) x starts at at + x·rs, the next k-step `step`
 * elements on. The rest are in the packed buffer. */
typedef struct {
    const T *at;
    size_t rs, step, direct;
    const T *packed;
} FN(panels);

/* Panel x (a row of A's block, a column of B's), its row stride (1 for B
 * and packed panels) and its k-step; width is MR or NR, the packed step. */
static inline const T *FN(panel)(const FN(panels) *s, size_t x, size_t kc, size_t width,
                                 size_t *rs, size_t *step)
{
    if (x < s->direct) {
        *rs = s->rs;
        *step = s->step;
        return s->at + x * s->rs;
    }
    *rs = 1;
    *step = width;
    return s->packed + (x - s->direct) * kc;
}

/* The micro-kernel on one tile, A's rows side by side or in place. */
static inline void FN(kernel)(size_t kc, const T *a, size_t a_rs, size_t a_step, const T *b,
                              size_t b_step, T *c, size_t ldc, bool overwrite)
{
    if (a_rs == 1)
        FN(micro_kernel)(kc, a, a_step, b, b_step, c, ldc, overwrite);
    else
        FN(micro_kernel_rows)(kc, a, a_rs, b, b_step, c, ldc, overwrite);
}

/* One block: C(ic:ic+mc, jc:jc+nc) += A·B, kc deep (= when overwrite).
 * Edge tiles go through a scratch tile so the kernel always runs full size. */
static void FN(block)(size_t mc, size_t nc, size_t kc, const FN(panels) *A, const FN(panels) *B,
                      T *c, size_t ldc, bool overwrite)
{
    for (size_t jr = 0; jr < nc; jr += FN(NR)) {
        size_t b_rs, b_step, a_rs, a_step;
        const T *b = FN(panel)(B, jr, kc, FN(NR), &b_rs, &b_step);
        for (size_t ir = 0; ir < mc; ir += GEMM_MR) {
            const T *a = FN(panel)(A, ir, kc, GEMM_MR, &a_rs, &a_step);
            T *ct = c + ir * ldc + jr;
            if (ir + GEMM_MR <= mc && jr + FN(NR) <= nc) {
                FN(kernel)(kc, a, a_rs, a_step, b, b_step, ct, ldc, overwrite);
                continue;
            }
            T tile[GEMM_MR * FN(NR)] __attribute__((aligned(64)));
            FN(kernel)(kc, a, a_rs, a_step, b, b_step, tile, FN(NR), true);
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
 * mini-batch of 10 through a layer) and B is row-major, B's panels are
 * read in place instead, NR elements side by side on each row; when C has
 * few columns (a layer of 30), A's panels are, row-major or transposed. */
static void FN(gemm_packed)(size_t m, size_t n, size_t k, const gemm_op *A, const gemm_op *B,
                            T *C, size_t ldc, T *pb, T *pa, bool overwrite)
{
    bool b_in_place = B->cs == 1 && m <= 4 * GEMM_MR;
    bool a_in_place = (A->cs == 1 || A->rs == 1) && n <= 4 * FN(NR);
    for (size_t jc = 0; jc < n; jc += GEMM_NC) {
        size_t nc = n - jc < GEMM_NC ? n - jc : GEMM_NC;
        for (size_t pc = 0; pc < k; pc += GEMM_KC) {
            size_t kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
            FN(panels) bp = {b_in_place ? (const T *)B->data + pc * B->rs + jc : NULL, 1, B->rs,
                             b_in_place ? nc / FN(NR) * FN(NR) : 0, pb};
            FN(pack_b)(B, pc, jc + bp.direct, kc, nc - bp.direct, pb);
            for (size_t ic = 0; ic < m; ic += GEMM_MC) {
                size_t mc = m - ic < GEMM_MC ? m - ic : GEMM_MC;
                FN(panels) ap = {a_in_place ? (const T *)A->data + ic * A->rs + pc * A->cs : NULL,
                                 A->rs, A->cs, a_in_place ? mc / GEMM_MR * GEMM_MR : 0, pa};
                FN(pack_a)(A, ic + ap.direct, pc, mc - ap.direct, kc, pa);
                FN(block)(mc, nc, kc, &ap, &bp, C + ic * ldc + jc, ldc, overwrite && pc == 0);
            }
        }
    }
}

#undef FN
#undef CAT
#undef CAT_
