/* npy.c: NumPy's .npy format (numpy/lib/format.py), for f32 and f64
 * tensors of any rank in C order:
 *
 *   "\x93NUMPY", major, minor (1.0; 2.0 and 3.0 read), header length
 *   (u16 little-endian for 1.0, u32 for 2.0 and 3.0), the header: a Python
 *   dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 *   padded with spaces and ended by '\n', then the data.
 *
 * The writer produces what np.save writes for the same array, byte for
 * byte (its spare spaces after the dict included), so files compare equal.
 * The reader parses the dict strictly (the three keys once each, in any
 * order, as NumPy's own checks require) and checks the data's size against
 * the file's before it allocates the tensor. */
#include "nn_internal.h"

#include <errno.h>
#include <string.h>

#define NPY_PREAMBLE_V1 10   /* magic 6, version 2, u16 length 2 */
#define NPY_PREAMBLE_V2 12   /* u32 length */
#define NPY_ALIGN 64         /* NumPy pads the header so the data starts aligned */
#define NPY_GROWTH_DIGITS 21 /* np.save's spare spaces: room for a longer shape[0] */
#define NPY_HEADER_MAX 4096  /* an f4/f8 header of rank 8 needs < 300 bytes */
#define NPY_DESCR_MAX 16

static const char NPY_MAGIC[6] = "\x93NUMPY";

/* ---------------------------------------------------------------- save */

/* The header np.save writes (version 1.0): dict, spare spaces, padding to
 * NPY_ALIGN, '\n'. Returns its length (< NPY_HEADER_MAX for any rank). */
static size_t npy_header(const ag_tensor *x, char h[NPY_HEADER_MAX])
{
    size_t rank = ag_tensor_rank(x), k = 0;
    const size_t *shape = ag_tensor_shape(x);
    char dims[AG_MAX_RANK * 24] = "";
    for (size_t i = 0; i < rank; i++)
        k += (size_t)snprintf(dims + k, sizeof dims - k, i ? ", %zu" : "%zu", shape[i]);
    size_t n = (size_t)snprintf(h, NPY_HEADER_MAX, "{'descr': '<%s', 'fortran_order': False, "
                                "'shape': (%s%s), }", ag_tensor_dtype(x) == AG_F32 ? "f4" : "f8",
                                dims, rank == 1 ? "," : "");
    if (rank > 0)
        for (int i = snprintf(NULL, 0, "%zu", shape[0]); i < NPY_GROWTH_DIGITS; i++)
            h[n++] = ' ';
    while ((NPY_PREAMBLE_V1 + n + 1) % NPY_ALIGN != 0)
        h[n++] = ' ';
    h[n++] = '\n';
    return n;
}

static int write_npy(FILE *f, const void *ctx)
{
    const ag_tensor *x = ctx;
    char h[NPY_HEADER_MAX];
    size_t hlen = npy_header(x, h);
    unsigned char pre[NPY_PREAMBLE_V1];
    memcpy(pre, NPY_MAGIC, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hlen & 0xff);
    pre[9] = (unsigned char)(hlen >> 8);
    if (fwrite(pre, 1, sizeof pre, f) != sizeof pre || fwrite(h, 1, hlen, f) != hlen)
        return errno ? errno : EIO;
    return nn__write_le(f, ag_data(x), ag_tensor_numel(x), ag_dtype_size(ag_tensor_dtype(x)));
}

ag_status nn_npy_save(const ag_tensor *x, const char *path, nn_error *err)
{
    if (!x || !path)
        return nn__fail(err, AG_ERR_NULL, "nn_npy_save: %s is NULL", x ? "path" : "x");
    return nn__save_atomic("nn_npy_save", path, write_npy, x, err);
}

/* ---------------------------------------------------------------- load */

/* The dict of a header, and where the parser is in it. */
typedef struct {
    const char *path;
    const char *h, *p, *end; /* the header's bytes */
    size_t h_at;             /* the header's offset in the file */
    char descr[NPY_DESCR_MAX];
    int fortran;             /* -1 until read */
    size_t rank, shape[AG_MAX_RANK];
    bool has_shape;
} npy_dict;

static ag_status bad(const npy_dict *d, nn_error *err, const char *what)
{
    return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: bad header at byte %zu: %s", d->path,
                    d->h_at + (size_t)(d->p - d->h), what);
}

static void skip_ws(npy_dict *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

/* Skips whitespace, then the character c if it is next. */
static bool eat(npy_dict *d, char c)
{
    skip_ws(d);
    if (d->p < d->end && *d->p == c) {
        d->p++;
        return true;
    }
    return false;
}

/* A Python string literal in ' or " without escapes, into out (cap bytes). */
static bool py_string(npy_dict *d, char *out, size_t cap)
{
    skip_ws(d);
    if (d->p >= d->end || (*d->p != '\'' && *d->p != '"'))
        return false;
    char q = *d->p++;
    size_t n = 0;
    for (; d->p < d->end && *d->p != q; d->p++) {
        if (*d->p == '\\' || (unsigned char)*d->p < 0x20 || n + 1 >= cap)
            return false;
        out[n++] = *d->p;
    }
    if (d->p >= d->end)
        return false;
    d->p++;
    out[n] = '\0';
    return true;
}

/* A Python int literal: digits, no sign, no leading zero; within size_t. */
static bool py_size(npy_dict *d, size_t *v)
{
    skip_ws(d);
    const char *start = d->p;
    size_t x = 0;
    for (; d->p < d->end && *d->p >= '0' && *d->p <= '9'; d->p++) {
        size_t digit = (size_t)(*d->p - '0');
        if (x > (SIZE_MAX - digit) / 10)
            return false;
        x = x * 10 + digit;
    }
    *v = x;
    return d->p > start && (d->p - start == 1 || *start != '0');
}

/* A tuple of ints: () for a scalar, (3,) for one axis, (3, 4) or (3, 4,). */
static ag_status py_shape(npy_dict *d, nn_error *err)
{
    if (!eat(d, '('))
        return bad(d, err, "'shape' is not a tuple");
    d->rank = 0;
    bool comma = false; /* after the last size: (3,) is a tuple, (3) an int */
    while (!eat(d, ')')) {
        if (d->rank == AG_MAX_RANK)
            return bad(d, err, "the shape has more than AG_MAX_RANK (8) axes");
        if (!py_size(d, &d->shape[d->rank++]))
            return bad(d, err, "expected an axis size (a non-negative integer)");
        if (!(comma = eat(d, ','))) {
            if (!eat(d, ')'))
                return bad(d, err, "expected ',' or ')' in the shape");
            break;
        }
    }
    if (d->rank == 1 && !comma)
        return bad(d, err, "'shape' is (n), an int, not the tuple (n,)");
    d->has_shape = true;
    return AG_OK;
}

/* One "'key': value" of the dict; each key once. */
static ag_status dict_item(npy_dict *d, nn_error *err)
{
    char key[16];
    if (!py_string(d, key, sizeof key))
        return bad(d, err, "expected a key: 'descr', 'fortran_order' or 'shape'");
    if (!eat(d, ':'))
        return bad(d, err, "expected ':' after a key");
    if (strcmp(key, "descr") == 0 && !d->descr[0]) {
        if (!py_string(d, d->descr, sizeof d->descr) || !d->descr[0])
            return bad(d, err, "'descr' is not a short string such as '<f4'");
        return AG_OK;
    }
    if (strcmp(key, "fortran_order") == 0 && d->fortran < 0) {
        skip_ws(d);
        for (int v = 0; v < 2; v++) {
            const char *word = v ? "True" : "False";
            size_t n = strlen(word);
            if ((size_t)(d->end - d->p) >= n && memcmp(d->p, word, n) == 0) {
                d->p += n;
                d->fortran = v;
                return AG_OK;
            }
        }
        return bad(d, err, "'fortran_order' is not True or False");
    }
    if (strcmp(key, "shape") == 0 && !d->has_shape)
        return py_shape(d, err);
    return bad(d, err, "an unknown or repeated key");
}

/* {item, item, item} with an optional trailing comma; then only whitespace. */
static ag_status parse_dict(npy_dict *d, nn_error *err)
{
    if (!eat(d, '{'))
        return bad(d, err, "the header is not a dict ('{' expected)");
    while (!eat(d, '}')) {
        ag_status s = dict_item(d, err);
        if (s != AG_OK)
            return s;
        if (!eat(d, ',')) {
            if (!eat(d, '}'))
                return bad(d, err, "expected ',' or '}'");
            break;
        }
    }
    skip_ws(d);
    if (d->p != d->end)
        return bad(d, err, "bytes after the dict");
    if (!d->descr[0] || d->fortran < 0 || !d->has_shape)
        return bad(d, err, "the dict lacks 'descr', 'fortran_order' or 'shape'");
    return AG_OK;
}

/* descr to a dtype, and whether the data is stored in the host's order. */
static ag_status read_descr(const npy_dict *d, ag_dtype *dt, bool *native, nn_error *err)
{
    const char *s = d->descr;
    bool order_ok = strchr("<>=|", s[0]) != NULL;
    if (!order_ok || s[1] != 'f' || (s[2] != '4' && s[2] != '8') || s[3] != '\0')
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: dtype '%s' is not supported "
                        "(float32 or float64: '<f4', '<f8')", d->path, s);
    if (d->fortran)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: the array is in Fortran order; "
                        "only C order is read (save np.ascontiguousarray(a))", d->path);
    *dt = s[2] == '4' ? AG_F32 : AG_F64;
    *native = s[0] == '=' || s[0] == '|' || (s[0] == '<') == nn__host_little_endian();
    return AG_OK;
}

/* The magic, the version and the header's length and offset. */
static ag_status read_preamble(FILE *f, const char *path, size_t size, size_t *h_at,
                               size_t *hlen, nn_error *err)
{
    unsigned char b[NPY_PREAMBLE_V2];
    size_t got = fread(b, 1, NPY_PREAMBLE_V1, f);
    if (got < 6 || memcmp(b, NPY_MAGIC, 6) != 0)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: not a .npy file (no \\x93NUMPY "
                        "magic)", path);
    if (got < NPY_PREAMBLE_V1)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: truncated in the preamble", path);
    if (b[6] < 1 || b[6] > 3 || b[7] != 0)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: unsupported version %u.%u (1.0, "
                        "2.0 and 3.0 are read)", path, b[6], b[7]);
    *h_at = b[6] == 1 ? NPY_PREAMBLE_V1 : NPY_PREAMBLE_V2;
    if (b[6] > 1 && fread(b + NPY_PREAMBLE_V1, 1, 2, f) != 2)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: truncated in the preamble", path);
    *hlen = (size_t)b[8] | (size_t)b[9] << 8;
    if (b[6] > 1)
        *hlen |= (size_t)b[10] << 16 | (size_t)b[11] << 24;
    if (*hlen > size - *h_at)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: the header length %zu is more "
                        "than the %zu bytes after the preamble", path, *hlen, size - *h_at);
    if (*hlen > NPY_HEADER_MAX)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: a header of %zu bytes; an f4 or f8 "
                        "array's is under %d", path, *hlen, NPY_HEADER_MAX);
    return AG_OK;
}

/* The data must fill the rest of the file exactly. */
static ag_status check_data_size(const npy_dict *d, ag_dtype dt, size_t avail, nn_error *err)
{
    size_t bytes = ag_dtype_size(dt);
    for (size_t i = 0; i < d->rank; i++)
        if (!nn__mul(bytes, d->shape[i], &bytes))
            return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: the shape's byte size "
                            "overflows", d->path);
    if (bytes > avail)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: truncated: the header describes "
                        "%zu data bytes, the file holds %zu", d->path, bytes, avail);
    if (bytes < avail)
        return nn__fail(err, AG_ERR_FORMAT, "nn_npy_load: %s: %zu trailing bytes after the "
                        "data", d->path, avail - bytes);
    return AG_OK;
}

/* The header, then the tensor: allocated only once its size matches the file. */
static ag_status load_from(FILE *f, const char *path, size_t size, ag_tensor **out,
                           nn_error *err)
{
    size_t h_at = 0, hlen = 0;
    ag_status s = read_preamble(f, path, size, &h_at, &hlen, err);
    if (s != AG_OK)
        return s;
    char h[NPY_HEADER_MAX];
    if (fread(h, 1, hlen, f) != hlen)
        return nn__fail(err, AG_ERR_IO, "nn_npy_load: %s: read error in the header", path);
    npy_dict d = {.path = path, .h = h, .p = h, .end = h + hlen, .h_at = h_at, .fortran = -1};
    ag_dtype dt = AG_F32;
    bool native = true;
    if ((s = parse_dict(&d, err)) != AG_OK || (s = read_descr(&d, &dt, &native, err)) != AG_OK ||
        (s = check_data_size(&d, dt, size - h_at - hlen, err)) != AG_OK)
        return s;
    ag_tensor *x = ag_zeros(dt, d.shape, d.rank);
    if (!x)
        return nn__fail(err, AG_ERR_NOMEM, "nn_npy_load: %s: out of memory for the data", path);
    size_t n = ag_tensor_numel(x), es = ag_dtype_size(dt);
    if (fread(ag_data(x), es, n, f) != n) {
        ag_tensor_free(x);
        return nn__fail(err, AG_ERR_IO, "nn_npy_load: %s: read error in the data (did the file "
                        "change?)", path);
    }
    if (!native)
        nn__swap_bytes(ag_data(x), n, es);
    *out = x;
    return AG_OK;
}

ag_status nn_npy_load(const char *path, ag_tensor **out, nn_error *err)
{
    if (!path || !out)
        return nn__fail(err, AG_ERR_NULL, "nn_npy_load: %s is NULL", path ? "out" : "path");
    *out = NULL;
    FILE *f;
    size_t size;
    ag_status s = nn__open_sized("nn_npy_load", path, &f, &size, err);
    if (s != AG_OK)
        return s;
    s = load_from(f, path, size, out, err);
    fclose(f);
    return s == AG_OK ? nn__ok(err) : s;
}
