/* gemm_impl.h: the packed GEMM for one element type and one instruction
 * set, included by gemm.c once per pair (inside that set's target region)
 * with these defined:
 *   T, SUFFIX   the element type, and the names' suffix (f32_avx512)
 *   VL          elements per vector
 *   MR, NV      the register tile: MR rows of C by NV vectors (NR = NV·VL)
 *   KC, MC, NC  the cache blocks
 *   MASKED      1 where the set has masked loads and stores: VMASK_T,
 *               VMASK(n) (the first n lanes, 1 <= n <= VL), VLOADM(p, mask)
 *               (zeros elsewhere, nothing read there) and VSTOREM(p, mask,
 *               v); then edge tiles run in place, only their rows, the
 *               last vector of each row masked;
 *               0: edge tiles go through a full tile of scratch.
 *
 * The BLIS loop nest: B is packed in KC x NC blocks of NR-wide column
 * panels, A in MC x KC blocks of MR-tall row panels, and a micro-kernel
 * keeps an MR x NR tile of C in registers while it streams the two panels.
 * Transposed operands are read through strides while packing, so backward
 * never copies a transpose. */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

typedef T FN(vec) __attribute__((vector_size(VL * sizeof(T))));
typedef T FN(vec_u) __attribute__((vector_size(VL * sizeof(T)), aligned(sizeof(T))));
#define V FN(vec)
#define VU FN(vec_u)

enum { FN(NR) = NV * VL };

/* C[0:rows, 0:nv·VL] (row stride ldc) += panel_a · panel_b, kc deep, or
 * = when overwrite (C's old values unread: the first block of a fresh
 * product). k-step p reads A's rows values at pa[r·a_rs + p·a_step] and
 * B's NR values side by side at pb[p·b_step]: a packed A panel has
 * a_rs = 1 and a_step = MR, a packed B panel b_step = NR. With masked,
 * only the lanes in *mask of the last of the nv vectors (of B and of C's
 * rows) are read and written, the others being zero; rows and nv (<= NV)
 * are constants wherever this is inlined. The sums start from zero, and C's old values are added at
 * the end: started from C, a short product (k = 10) waits on C's loads,
 * and those wait on the stores of the tile above (see below). */
static inline __attribute__((always_inline)) void
FN(tile)(size_t kc, const T *restrict pa, size_t a_rs, size_t a_step, const T *restrict pb,
         size_t b_step, T *restrict c, size_t ldc, bool overwrite, const int rows, const int nv,
         const bool masked, const void *mask, size_t last)
{
    V zero = {0}, acc[MR][NV];
    (void)mask;
    (void)masked;
    (void)last;
    /* C's lines, wanted at the end: fetched while a long tile computes
     * (2-3% on 1024^3 and 2048^3; edge tiles and short ones lost by it) */
    if (!masked && kc >= 128)
        GEMM_UNROLL
        for (int r = 0; r < rows; r++)
            GEMM_UNROLL
            for (int v = 0; v < nv; v++)
                __builtin_prefetch(c + (size_t)r * ldc + v * VL, 1, 3);
    /* loops over rows and vectors unrolled in full: the tile lives in registers */
    GEMM_UNROLL
    for (int r = 0; r < rows; r++)
        GEMM_UNROLL
        for (int v = 0; v < nv; v++)
            acc[r][v] = zero;
    for (size_t p = 0; p < kc; p++, pa += a_step, pb += b_step) {
        V b[NV];
        GEMM_UNROLL
        for (int v = 0; v < nv; v++)
#if MASKED
            b[v] = masked && v == nv - 1 ? VLOADM(pb + v * VL, *(const VMASK_T *)mask)
                                         : *(const VU *)(pb + v * VL);
#else
            b[v] = *(const VU *)(pb + v * VL);
#endif
        GEMM_UNROLL
        for (int r = 0; r < rows; r++) {
            T ar = pa[(size_t)r * a_rs];
            GEMM_UNROLL
            for (int v = 0; v < nv; v++)
                acc[r][v] += ar * b[v];
        }
    }
    /* C's old values are all read before any is written: a masked store
     * holds up a later load of the bytes its masked-off lanes span (the
     * next row's start) until it retires. */
    if (!overwrite)
        GEMM_UNROLL
        for (int r = 0; r < rows; r++)
            GEMM_UNROLL
            for (int v = 0; v < nv; v++) {
                const T *cv = c + (size_t)r * ldc + v * VL;
#if MASKED
                if (masked && v == nv - 1) {
                    acc[r][v] += VLOADM(cv, *(const VMASK_T *)mask);
                    continue;
                }
#endif
                acc[r][v] += *(const VU *)cv;
            }
    GEMM_UNROLL
    for (int r = 0; r < rows; r++)
        GEMM_UNROLL
        for (int v = 0; v < nv; v++) {
            T *cv = c + (size_t)r * ldc + v * VL;
#if MASKED
            if (masked && v == nv - 1) {
                VSTOREM(cv, *(const VMASK_T *)mask, last, acc[r][v]);
                continue;
            }
#endif
            *(VU *)cv = acc[r][v];
        }
}

/* The micro-kernel on a full tile, in two instances of the tile above: A's
 * MR values side by side (packed, or stored transposed), and A's rows read
 * in place. */
static void FN(kernel_full)(size_t kc, const T *pa, size_t a_step, const T *pb, size_t b_step, T *c,
                            size_t ldc, bool overwrite)
{
    FN(tile)(kc, pa, 1, a_step, pb, b_step, c, ldc, overwrite, MR, NV, false, NULL, 0);
}

static void FN(kernel_full_rows)(size_t kc, const T *pa, size_t a_rs, const T *pb, size_t b_step,
                                 T *c, size_t ldc, bool overwrite)
{
    FN(tile)(kc, pa, a_rs, 1, pb, b_step, c, ldc, overwrite, MR, NV, false, NULL, 0);
}

#if MASKED
/* An edge tile, in place: rows of C (1 to MR), each row's first cols
 * columns (1 to NR); A's and B's values beyond them are not read. One
 * instance of the tile per row count, so a 10-row product runs 10 rows,
 * and one per count of vectors, so 10 columns take one vector, not NV. */
_Static_assert(NV == 2, "an edge tile takes one vector or NV");
#define ROWS_CASE(n, RS, STEP, NVS)                                                          \
    case n:                                                                                  \
        FN(tile)(kc, pa, RS, STEP, pb, b_step, c, ldc, overwrite, (n) < MR ? (n) : MR, NVS, true, m, last); \
        return;
#define ROWS_CASES(RS, STEP, NVS)                                                            \
    ROWS_CASE(1, RS, STEP, NVS) ROWS_CASE(2, RS, STEP, NVS) ROWS_CASE(3, RS, STEP, NVS)         \
    ROWS_CASE(4, RS, STEP, NVS) ROWS_CASE(5, RS, STEP, NVS) ROWS_CASE(6, RS, STEP, NVS)         \
    ROWS_CASE(7, RS, STEP, NVS) ROWS_CASE(8, RS, STEP, NVS) ROWS_CASES_9(RS, STEP, NVS)
#if MR > 8
#define ROWS_CASES_9(RS, STEP, NVS)                                                          \
    ROWS_CASE(9, RS, STEP, NVS) ROWS_CASE(10, RS, STEP, NVS) ROWS_CASE(11, RS, STEP, NVS)       \
    ROWS_CASE(12, RS, STEP, NVS) ROWS_CASE(13, RS, STEP, NVS) ROWS_CASE(14, RS, STEP, NVS)      \
    ROWS_CASE(15, RS, STEP, NVS) ROWS_CASE(16, RS, STEP, NVS)
#else
#define ROWS_CASES_9(RS, STEP, NVS)
#endif
_Static_assert(MR <= 16, "ROWS_CASES covers 16 rows");

#define EDGE_KERNEL(name, NVS)                                                                  \
    static void name(size_t kc, const T *pa, size_t a_rs, size_t a_step, const T *pb, size_t b_step, \
                     T *c, size_t ldc, size_t rows, const VMASK_T *m, size_t last, bool overwrite) \
    {                                                                                           \
        if (a_rs == 1) {                                                                        \
            switch (rows) { ROWS_CASES(1, a_step, NVS) }                                        \
        } else {                                                                                \
            switch (rows) { ROWS_CASES(a_rs, 1, NVS) }                                          \
        }                                                                                       \
    }
EDGE_KERNEL(FN(kernel_edge), NV)
EDGE_KERNEL(FN(kernel_edge1), 1)
#undef EDGE_KERNEL
#undef ROWS_CASE
#undef ROWS_CASES
#undef ROWS_CASES_9
#endif

/* One panel of width W from w (<= W) lines of src, each kc long and
 * contiguous, ld apart: dst[p·W + x] = src[x·ld + p], zero for x >= w. The
 * lines are read a cache line at a time (PB elements), each piece going to
 * PB rows of the panel: reading across the lines one element at a time
 * would touch w lines per step, and at a power-of-two ld they fall in one
 * cache set and evict each other. */
enum { FN(PB) = 64 / sizeof(T) };

static inline void FN(pack_lines)(const T *src, size_t ld, size_t kc, size_t w, size_t W, T *dst)
{
    if (w < W) /* zeros first, row by row (copies of a constant size: no slow rep stos) */
        for (size_t p = 0; p < kc; p++)
            memset(dst + p * W, 0, W * sizeof(T));
    size_t p = 0;
    for (; p + FN(PB) <= kc; p += FN(PB))
        for (size_t x = 0; x < w; x++) {
            const T *line = src + x * ld + p;
            GEMM_UNROLL
            for (size_t i = 0; i < FN(PB); i++)
                dst[(p + i) * W + x] = line[i];
        }
    for (size_t x = 0; x < w; x++)
        for (size_t q = p; q < kc; q++)
            dst[q * W + x] = src[x * ld + q];
}

/* Packs A(i0:i0+mc, p0:p0+kc) into MR-row panels, zero-padding the last.
 * A row-major A's rows are lines of pack_lines; a transposed A (rs == 1)
 * gives MR contiguous elements per step. */
static void FN(pack_a)(const gemm_op *A, size_t i0, size_t p0, size_t mc, size_t kc, T *pa)
{
    const T *a = A->data;
    for (size_t ir = 0; ir < mc; ir += MR, pa += MR * kc) {
        const T *base = a + (i0 + ir) * A->rs + p0 * A->cs;
        size_t h = mc - ir < MR ? mc - ir : MR;
        if (A->cs == 1) {
            FN(pack_lines)(base, A->rs, kc, h, MR, pa);
        } else if (h == MR) {
            for (size_t p = 0; p < kc; p++)
                memcpy(pa + p * MR, base + p * A->cs, MR * sizeof(T));
        } else { /* the last, short panel: h rows, then zeros */
            for (size_t p = 0; p < kc; p++) {
                for (size_t r = 0; r < h; r++)
                    pa[p * MR + r] = base[r + p * A->cs];
                for (size_t r = h; r < MR; r++)
                    pa[p * MR + r] = 0;
            }
        }
    }
}

/* Packs B(p0:p0+kc, j0:j0+nc) into NR-column panels, zero-padding the last.
 * A row-major B is read row by row, each row's NR-wide pieces going to
 * their panels: the reads stream through memory, where a panel at a time
 * would touch a new cache line on every row. A transposed B's columns are
 * lines of pack_lines. */
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
        size_t w = nc - jr < FN(NR) ? nc - jr : FN(NR);
        FN(pack_lines)(b + p0 + (j0 + jr) * B->cs, B->cs, kc, w, FN(NR), pb + jr * kc);
    }
}

/* Where the micro-kernel finds a block's panels of one operand: the first
 * `direct` rows (of A) or columns (of B) in place in the operand: row
 * (column) x starts at at + x·rs, the next k-step `step` elements on. The
 * rest are in the packed buffer. */
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

/* The micro-kernel on one tile of rows x cols (at most MR x NR). */
static inline void FN(kernel)(size_t kc, const T *a, size_t a_rs, size_t a_step, const T *b,
                              size_t b_step, T *c, size_t ldc, size_t rows, size_t cols, bool overwrite)
{
    if (rows == MR && cols == FN(NR)) {
        if (a_rs == 1)
            FN(kernel_full)(kc, a, a_step, b, b_step, c, ldc, overwrite);
        else
            FN(kernel_full_rows)(kc, a, a_rs, b, b_step, c, ldc, overwrite);
        return;
    }
#if MASKED
    /* the lanes of the last vector a row needs */
    size_t last = cols <= VL ? cols : cols - VL;
    VMASK_T m = VMASK(last);
    if (cols <= VL)
        FN(kernel_edge1)(kc, a, a_rs, a_step, b, b_step, c, ldc, rows, &m, last, overwrite);
    else
        FN(kernel_edge)(kc, a, a_rs, a_step, b, b_step, c, ldc, rows, &m, last, overwrite);
#else
    /* a full tile into scratch, then its rows x cols corner into C, as a
     * tile of C would take it (C = sums, or C + sums) */
    T tile[MR * FN(NR)] __attribute__((aligned(64)));
    if (a_rs == 1)
        FN(kernel_full)(kc, a, a_step, b, b_step, tile, FN(NR), true);
    else
        FN(kernel_full_rows)(kc, a, a_rs, b, b_step, tile, FN(NR), true);
    for (size_t r = 0; r < rows; r++) {
        T *dst = c + r * ldc;
        const T *src = tile + r * FN(NR);
        if (overwrite)
            memcpy(dst, src, cols * sizeof(T));
        else
            for (size_t j = 0; j < cols; j++)
                dst[j] += src[j];
    }
#endif
}

/* One block: C(ic:ic+mc, jc:jc+nc) += A·B, kc deep (= when overwrite). */
static void FN(block)(size_t mc, size_t nc, size_t kc, const FN(panels) *A, const FN(panels) *B,
                      T *c, size_t ldc, bool overwrite)
{
    for (size_t jr = 0; jr < nc; jr += FN(NR)) {
        size_t b_rs, b_step, a_rs, a_step;
        size_t cols = nc - jr < FN(NR) ? nc - jr : FN(NR);
        const T *b = FN(panel)(B, jr, kc, FN(NR), &b_rs, &b_step);
        for (size_t ir = 0; ir < mc; ir += MR) {
            const T *a = FN(panel)(A, ir, kc, MR, &a_rs, &a_step);
            size_t rows = mc - ir < MR ? mc - ir : MR;
            FN(kernel)(kc, a, a_rs, a_step, b, b_step, c + ir * ldc + jr, ldc, rows, cols, overwrite);
        }
    }
}

/* C[m,n] (row stride ldc) += A·B with A, B read through their strides, or
 * = when overwrite (k > 0); pb and pa hold a packed B block and A block
 * (see scratch_elems in gemm.c).
 *
 * Packing pays when a panel is read many times: a B panel once per MR rows
 * of C, an A panel once per NR columns. When C has only a few rows (a
 * mini-batch of 10 through a layer) and B is row-major, B's panels are
 * read in place instead, NR elements side by side on each row; when C has
 * few columns (a layer of 30), A's panels are, row-major or transposed.
 * Where edge tiles run in place (MASKED) that includes the ragged last
 * panel, so such products pack nothing. Whatever is packed, each element
 * of C sums the same products in the same order: KC-deep partial sums,
 * each added to C in turn. */
static void FN(gemm_packed)(size_t m, size_t n, size_t k, const gemm_op *A, const gemm_op *B,
                            void *Cv, size_t ldc, void *pbv, void *pav, bool overwrite)
{
    T *C = Cv, *pb = pbv, *pa = pav;
    bool b_in_place = B->cs == 1 && m <= B_IN_PLACE_ROWS;
    bool a_in_place = (A->cs == 1 || A->rs == 1) && n <= A_IN_PLACE_COLS;
    for (size_t jc = 0; jc < n; jc += NC) {
        size_t nc = n - jc < NC ? n - jc : NC;
        for (size_t pc = 0; pc < k; pc += KC) {
            size_t kc = k - pc < KC ? k - pc : KC;
            FN(panels) bp = {b_in_place ? (const T *)B->data + pc * B->rs + jc : NULL, 1, B->rs,
                             b_in_place ? (MASKED ? nc : nc / FN(NR) * FN(NR)) : 0, pb};
            if (bp.direct < nc)
                FN(pack_b)(B, pc, jc + bp.direct, kc, nc - bp.direct, pb);
            for (size_t ic = 0; ic < m; ic += MC) {
                size_t mc = m - ic < MC ? m - ic : MC;
                FN(panels) ap = {a_in_place ? (const T *)A->data + ic * A->rs + pc * A->cs : NULL,
                                 A->rs, A->cs, a_in_place ? (MASKED ? mc : mc / MR * MR) : 0, pa};
                if (ap.direct < mc)
                    FN(pack_a)(A, ic + ap.direct, pc, mc - ap.direct, kc, pa);
                FN(block)(mc, nc, kc, &ap, &bp, C + ic * ldc + jc, ldc, overwrite && pc == 0);
            }
        }
    }
}

/* This instance, for gemm.c's table. */
static const gemm_kernel FN(gemm) = {MR, FN(NR), KC, MC, NC, FN(gemm_packed)};

#undef V
#undef VU
#undef FN
#undef CAT
#undef CAT_
