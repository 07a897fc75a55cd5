/* data_files.c: data set loaders: CSV (class labels or real targets; with
 * sklearn's header line, a line of column names, or none) and IDX (MNIST).
 * Both check everything before handing out a data set. */
#include "nn_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIELD_MAX 64 /* longest number text accepted in a CSV field */

/* Labels are class indices stored in the data set's dtype, so each must be
 * an integer that dtype holds exactly: below 2^24 in f32, 2^53 in f64 (and
 * below SIZE_MAX, where size_t is narrower). */
static double label_limit(ag_dtype dt)
{
    double limit = dt == AG_F32 ? 16777216.0 : 9007199254740992.0;
    return limit < (double)SIZE_MAX ? limit : (double)SIZE_MAX;
}

void nn_dataset_free(nn_dataset *d)
{
    if (!d)
        return;
    ag_tensor_free(d->x);
    ag_tensor_free(d->labels);
    *d = (nn_dataset){0};
}

/* ---------------------------------------------------------------- CSV */

typedef struct {
    const char *fn;      /* the public function, for messages */
    const char *path;
    const char *p, *end; /* the unread text */
    size_t line;         /* number of the line last returned, 1-based */
    const char *ls, *le; /* that line, without its end-of-line characters */
} csv_text;

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Moves to the next line that is not blank; false at the end of the text. */
static bool next_line(csv_text *c)
{
    while (c->p < c->end) {
        const char *nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
        const char *e = nl ? nl : c->end;
        c->ls = c->p;
        c->le = e;
        c->p = nl ? nl + 1 : c->end;
        c->line++;
        while (c->le > c->ls && is_blank(c->le[-1]))
            c->le--;
        while (c->ls < c->le && is_blank(*c->ls))
            c->ls++;
        if (c->ls < c->le)
            return true;
    }
    return false;
}

static size_t count_fields(const char *s, const char *e)
{
    size_t n = 1;
    for (; s < e; s++)
        n += *s == ',';
    return n;
}

/* The field starting at *s up to the next ',' or e, trimmed, copied into
 * buf (cut to cap - 1 bytes); *s moves past the comma. Returns its length. */
static size_t take_field(const char **s, const char *e, char *buf, size_t cap)
{
    const char *fe = memchr(*s, ',', (size_t)(e - *s));
    if (!fe)
        fe = e;
    const char *a = *s, *b = fe;
    while (a < b && is_blank(*a))
        a++;
    while (b > a && is_blank(b[-1]))
        b--;
    size_t n = (size_t)(b - a), k = n < cap - 1 ? n : cap - 1;
    memcpy(buf, a, k);
    buf[k] = '\0';
    *s = fe < e ? fe + 1 : e;
    return n;
}

/* Whether strtod reads the whole field, finite or not ("nan", "1e999"). */
static bool is_numeric(const char *buf, size_t len)
{
    if (len == 0 || len >= FIELD_MAX)
        return false;
    char *end;
    strtod(buf, &end);
    return end == buf + len;
}

/* A whole field as a finite number ("nan", "inf" and "" are not). */
static bool parse_number(const char *buf, size_t len, double *v)
{
    if (len == 0 || len >= FIELD_MAX)
        return false;
    char *end;
    errno = 0;
    *v = strtod(buf, &end);
    return end == buf + len && isfinite(*v);
}

static bool parse_count(const char *buf, size_t len, size_t *v)
{
    if (len == 0 || len > 18)
        return false;
    *v = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return false;
        *v = *v * 10 + (size_t)(buf[i] - '0');
    }
    return true;
}

typedef enum {
    HEAD_NONE,    /* the first line is data */
    HEAD_SKLEARN, /* "rows,features,class names..." */
    HEAD_NAMES    /* column names: "sepal_length,...,species" */
} csv_head_kind;

typedef struct {
    csv_head_kind kind;
    size_t rows, features, classes; /* HEAD_SKLEARN */
    size_t names;                   /* HEAD_NAMES: the number of names */
} csv_header;

/* sklearn's "rows,features,name,...": two counts, then names that are not
 * numbers. */
static bool read_sklearn_header(const csv_text *c, csv_header *h)
{
    const char *s = c->ls;
    char buf[FIELD_MAX];
    size_t n = count_fields(c->ls, c->le), len;
    if (n < 3)
        return false;
    len = take_field(&s, c->le, buf, sizeof buf);
    if (!parse_count(buf, len, &h->rows))
        return false;
    len = take_field(&s, c->le, buf, sizeof buf);
    if (!parse_count(buf, len, &h->features))
        return false;
    for (size_t i = 2; i < n; i++) {
        len = take_field(&s, c->le, buf, sizeof buf);
        if (len == 0 || is_numeric(buf, len))
            return false;
    }
    h->classes = n - 2;
    h->kind = HEAD_SKLEARN;
    return true;
}

/* A line of column names: no field empty, none a number. A line with some
 * numbers is data (and its other fields errors that name them). */
static bool read_names_header(const csv_text *c, csv_header *h)
{
    const char *s = c->ls;
    char buf[FIELD_MAX];
    size_t n = count_fields(c->ls, c->le);
    for (size_t i = 0; i < n; i++) {
        size_t len = take_field(&s, c->le, buf, sizeof buf);
        if (len == 0 || is_numeric(buf, len))
            return false;
    }
    h->names = n;
    h->kind = HEAD_NAMES;
    return true;
}

/* First pass: the header, the field count and the row count. targets is 0
 * for a class label, else the number of real target columns. */
static ag_status csv_shape(csv_text *c, csv_header *h, size_t targets, size_t *fields,
                           size_t *rows, nn_error *err)
{
    const char *fn = c->fn, *path = c->path;
    size_t last = targets ? targets : 1; /* columns after the features */
    *rows = *fields = 0;
    if (next_line(c) && !read_sklearn_header(c, h) && !read_names_header(c, h)) {
        c->p = c->ls; /* the first line is data: read it again */
        c->line--;
    }
    size_t first = 0;
    while (next_line(c)) {
        size_t n = count_fields(c->ls, c->le);
        if (*rows == 0) {
            *fields = n;
            first = c->line;
        } else if (n != *fields) {
            return nn__fail(err, AG_ERR_FORMAT, "%s: %s line %zu: %zu fields, but line %zu has %zu",
                            fn, path, c->line, n, first, *fields);
        }
        ++*rows;
    }
    if (h->kind == HEAD_SKLEARN && h->rows != *rows)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the header says %zu rows, the file has %zu",
                        fn, path, h->rows, *rows);
    if (*rows == 0)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s has no data rows", fn, path);
    if (h->kind == HEAD_NAMES && h->names != *fields)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the header line names %zu columns, but "
                        "line %zu has %zu fields", fn, path, h->names, first, *fields);
    if (*fields <= last && !targets)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s line %zu: need features and a label, found "
                        "one field", fn, path, first);
    if (*fields <= last)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s line %zu: need features and %zu targets, "
                        "found %zu fields", fn, path, first, targets, *fields);
    if (h->kind == HEAD_SKLEARN && h->features + last != *fields)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the header says %zu features, but rows "
                        "have %zu fields (features + %s)", fn, path, h->features, *fields,
                        targets ? "targets" : "label");
    return AG_OK;
}

/* Stores field j (0-based) of row r, value v read from buf: a feature, a
 * real target, or a class label checked against the limit. */
static ag_status csv_store(const csv_text *c, const csv_header *h, nn_dataset *d, size_t targets,
                           size_t r, size_t j, double v, const char *buf, nn_error *err)
{
    ag_dtype dt = ag_tensor_dtype(d->x);
    if (j < d->features) {
        nn__set(dt, ag_data(d->x), r * d->features + j, v);
        return AG_OK;
    }
    if (targets) {
        nn__set(dt, ag_data(d->labels), r * targets + (j - d->features), v);
        return AG_OK;
    }
    bool sk = h->kind == HEAD_SKLEARN;
    double limit = sk ? (double)h->classes : label_limit(dt);
    if (v < 0 || v != floor(v) || (sk && v >= limit))
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s line %zu: label '%s' is not a class index "
                        "(an integer in [0, %.0f))", c->fn, c->path, c->line, buf, limit);
    if (v >= limit)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s line %zu: label '%s' is too large: %s holds "
                        "class indices exactly only below %.0f%s", c->fn, c->path, c->line, buf,
                        ag_dtype_name(dt), limit, dt == AG_F32 ? " (2^24; f64 allows 2^53)" : "");
    nn__set(dt, ag_data(d->labels), r, v);
    return AG_OK;
}

/* Second pass: the numbers, into d (already allocated). */
static ag_status csv_values(csv_text *c, const csv_header *h, size_t targets, nn_dataset *d,
                            nn_error *err)
{
    ag_dtype dt = ag_tensor_dtype(d->x);
    size_t fields = d->features + (targets ? targets : 1);
    char buf[FIELD_MAX];
    double v, max_label = 0;
    for (size_t r = 0; r < d->n && next_line(c); r++) {
        const char *s = c->ls;
        for (size_t j = 0; j < fields; j++) {
            size_t len = take_field(&s, c->le, buf, sizeof buf);
            if (!parse_number(buf, len, &v))
                return nn__fail(err, AG_ERR_FORMAT, "%s: %s line %zu, field %zu: '%s%s' is not "
                                "a finite number", c->fn, c->path, c->line, j + 1, buf,
                                len >= sizeof buf ? "..." : "");
            if (dt == AG_F32 && !isfinite((float)v)) /* e.g. 1e39: finite, but not in f32 */
                return nn__fail(err, AG_ERR_FORMAT, "%s: %s line %zu, field %zu: '%s' is out of "
                                "the range of f32", c->fn, c->path, c->line, j + 1, buf);
            ag_status s2 = csv_store(c, h, d, targets, r, j, v, buf, err);
            if (s2 != AG_OK)
                return s2;
            if (!targets && j == d->features)
                max_label = v > max_label ? v : max_label;
        }
    }
    d->classes = targets ? 0 : h->kind == HEAD_SKLEARN ? h->classes : (size_t)max_label + 1;
    return AG_OK;
}

/* The whole file as text in engine memory (freed with *owner). */
static ag_status slurp(const char *fn, const char *path, ag_tensor **owner, const char **text,
                       size_t *len, nn_error *err)
{
    FILE *f;
    ag_status s = nn__open_sized(fn, path, &f, len, err);
    if (s != AG_OK)
        return s;
    char *buf = *len < SIZE_MAX ? nn__mem(*len + 1, owner) : NULL;
    if (!buf)
        s = nn__fail(err, AG_ERR_NOMEM, "%s: out of memory reading '%s' (%zu bytes)", fn, path,
                     *len);
    else if (fread(buf, 1, *len, f) != *len)
        s = nn__fail(err, AG_ERR_IO, "%s: cannot read '%s'", fn, path);
    else if (memchr(buf, '\0', *len))
        s = nn__fail(err, AG_ERR_FORMAT, "%s: '%s' holds a NUL byte: not a CSV text file", fn,
                     path);
    fclose(f);
    if (s != AG_OK) {
        ag_tensor_free(*owner);
        *owner = NULL;
    }
    *text = buf;
    if (s == AG_OK && *len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) { /* UTF-8 BOM */
        *text += 3;
        *len -= 3;
    }
    return s;
}

/* nn_csv_load (targets 0) and nn_csv_load_regression (targets >= 1). */
static ag_status csv_load(const char *fn, const char *path, ag_dtype dt, size_t targets,
                          nn_dataset *out, nn_error *err)
{
    if (!path || !out)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, path ? "out" : "path");
    *out = (nn_dataset){0};
    if (ag_dtype_size(dt) == 0)
        return nn__fail(err, AG_ERR_DTYPE, "%s: dtype %d is not AG_F32 or AG_F64", fn, (int)dt);
    ag_tensor *owner = NULL;
    const char *text;
    size_t len, fields, rows;
    ag_status s = slurp(fn, path, &owner, &text, &len, err);
    if (s != AG_OK)
        return s;
    csv_text c = {.fn = fn, .path = path, .p = text, .end = text + len};
    csv_header h = {0};
    s = csv_shape(&c, &h, targets, &fields, &rows, err);
    size_t last = targets ? targets : 1;
    nn_dataset d = {.n = rows, .features = fields - last};
    if (s == AG_OK) {
        d.x = ag_zeros(dt, (size_t[]){rows, d.features}, 2);
        d.labels = targets ? ag_zeros(dt, (size_t[]){rows, targets}, 2) : ag_zeros(dt, &d.n, 1);
        if (!d.x || !d.labels)
            s = nn__fail(err, AG_ERR_NOMEM, "%s: out of memory for %zu rows", fn, rows);
    }
    c = (csv_text){.fn = fn, .path = path, .p = text, .end = text + len};
    if (s == AG_OK && h.kind != HEAD_NONE)
        next_line(&c); /* past the header */
    if (s == AG_OK)
        s = csv_values(&c, &h, targets, &d, err);
    ag_tensor_free(owner);
    if (s != AG_OK) {
        nn_dataset_free(&d);
        return s;
    }
    *out = d;
    return nn__ok(err);
}

ag_status nn_csv_load(const char *path, ag_dtype dt, nn_dataset *out, nn_error *err)
{
    return csv_load("nn_csv_load", path, dt, 0, out, err);
}

ag_status nn_csv_load_regression(const char *path, ag_dtype dt, size_t n_targets,
                                 nn_dataset *out, nn_error *err)
{
    const char *fn = "nn_csv_load_regression";
    if (out)
        *out = (nn_dataset){0};
    if (n_targets == 0 && path && out)
        return nn__fail(err, AG_ERR_VALUE, "%s: n_targets is 0 (for class labels use "
                        "nn_csv_load)", fn);
    return csv_load(fn, path, dt, n_targets, out, err);
}

/* ---------------------------------------------------------------- IDX */

typedef struct {
    FILE *f;
    const char *path;
    size_t size;        /* bytes in the file */
    uint32_t dims[3];   /* count, then rows and cols for images */
    size_t ndims;
} idx_file;

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Opens an IDX file of unsigned bytes with ndims dimensions and checks its
 * magic, its dimensions and that its size is exactly header + data. */
static ag_status idx_open(idx_file *x, const char *path, size_t ndims, const char *what,
                          nn_error *err)
{
    const char *fn = "nn_idx_load";
    x->path = path;
    x->ndims = ndims;
    ag_status s = nn__open_sized(fn, path, &x->f, &x->size, err);
    if (s != AG_OK)
        return s;
    unsigned char head[16];
    size_t head_len = 4 + 4 * ndims, data = 1;
    uint32_t magic = 0x800u | (uint32_t)ndims;
    if (fread(head, 1, head_len, x->f) != head_len)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: truncated header (%zu bytes, need %zu)",
                        fn, path, x->size, head_len);
    if (be32(head) != magic)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: bad magic 0x%08x (expected 0x%08x for IDX %s)",
                        fn, path, (unsigned)be32(head), (unsigned)magic, what);
    for (size_t i = 0; i < ndims; i++) {
        x->dims[i] = be32(head + 4 + 4 * i);
        if (x->dims[i] == 0)
            return nn__fail(err, AG_ERR_FORMAT, "%s: %s: dimension %zu is 0", fn, path, i);
        if (!nn__mul(data, x->dims[i], &data))
            return nn__fail(err, AG_ERR_OVERFLOW, "%s: %s: the data size overflows", fn, path);
    }
    if (x->size - head_len < data)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: truncated: %zu bytes of data, the header "
                        "says %zu", fn, path, x->size - head_len, data);
    if (x->size - head_len > data)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: %zu trailing bytes after the data", fn, path,
                        x->size - head_len - data);
    return AG_OK;
}

/* Reads n bytes from f into the first n elements of the dtype buffer dst;
 * *max gets the largest byte. */
static bool idx_read(FILE *f, ag_dtype dt, void *dst, size_t n, unsigned *max)
{
    unsigned char buf[4096];
    *max = 0;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof buf ? n - done : sizeof buf;
        if (fread(buf, 1, k, f) != k)
            return false;
        for (size_t i = 0; i < k; i++) {
            nn__set(dt, dst, done + i, buf[i]);
            *max = buf[i] > *max ? buf[i] : *max;
        }
        done += k;
    }
    return true;
}

static ag_status idx_fill(idx_file *im, idx_file *lb, ag_dtype dt, nn_dataset *d, nn_error *err)
{
    const char *fn = "nn_idx_load";
    if (im->dims[0] != lb->dims[0])
        return nn__fail(err, AG_ERR_FORMAT, "%s: count mismatch: %u images in %s, %u labels in %s",
                        fn, (unsigned)im->dims[0], im->path, (unsigned)lb->dims[0], lb->path);
    d->n = im->dims[0];
    d->features = (size_t)im->dims[1] * im->dims[2]; /* <= the file size: no overflow */
    d->x = ag_zeros(dt, (size_t[]){d->n, d->features}, 2);
    d->labels = ag_zeros(dt, &d->n, 1);
    if (!d->x || !d->labels)
        return nn__fail(err, AG_ERR_NOMEM, "%s: out of memory for %zu images", fn, d->n);
    unsigned max;
    if (!idx_read(im->f, dt, ag_data(d->x), d->n * d->features, &max))
        return nn__fail(err, AG_ERR_IO, "%s: cannot read %s", fn, im->path);
    if (!idx_read(lb->f, dt, ag_data(d->labels), d->n, &max))
        return nn__fail(err, AG_ERR_IO, "%s: cannot read %s", fn, lb->path);
    d->classes = (size_t)max + 1;
    return AG_OK;
}

ag_status nn_idx_load(const char *images_path, const char *labels_path, ag_dtype dt,
                      nn_dataset *out, nn_error *err)
{
    if (!images_path || !labels_path || !out)
        return nn__fail(err, AG_ERR_NULL, "nn_idx_load: %s is NULL",
                        !images_path ? "images_path" : !labels_path ? "labels_path" : "out");
    *out = (nn_dataset){0};
    if (ag_dtype_size(dt) == 0)
        return nn__fail(err, AG_ERR_DTYPE, "nn_idx_load: dtype %d is not AG_F32 or AG_F64",
                        (int)dt);
    idx_file im = {0}, lb = {0};
    nn_dataset d = {0};
    ag_status s = idx_open(&im, images_path, 3, "images", err);
    if (s == AG_OK)
        s = idx_open(&lb, labels_path, 1, "labels", err);
    if (s == AG_OK)
        s = idx_fill(&im, &lb, dt, &d, err);
    if (im.f)
        fclose(im.f);
    if (lb.f)
        fclose(lb.f);
    if (s != AG_OK) {
        nn_dataset_free(&d);
        return s;
    }
    *out = d;
    return nn__ok(err);
}
