/* load.c: data set loaders: CSV (with or without sklearn's header line)
 * and IDX (MNIST). Both check everything before handing out a data set. */
#include "nn_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIELD_MAX 64          /* longest number text accepted in a CSV field */
#define LABEL_LIMIT 16777216  /* 2^24: every label is exact in f32 */

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

typedef struct {
    bool present;
    size_t rows, features, classes;
} csv_header;

/* sklearn's "rows,features,name,...": two counts, then names that are not
 * numbers; any other first line is data. */
static bool read_header(const csv_text *c, csv_header *h)
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
        double v;
        len = take_field(&s, c->le, buf, sizeof buf);
        if (len == 0 || parse_number(buf, len, &v))
            return false;
    }
    h->classes = n - 2;
    h->present = true;
    return true;
}

/* First pass: the header, the field count and the row count. */
static ag_status csv_shape(csv_text *c, csv_header *h, size_t *fields, size_t *rows, nn_error *err)
{
    const char *fn = "nn_csv_load", *path = c->path;
    *rows = *fields = 0;
    if (next_line(c) && !read_header(c, h)) {
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
    if (h->present && h->rows != *rows)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the header says %zu rows, the file has %zu",
                        fn, path, h->rows, *rows);
    if (*rows == 0)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s has no data rows", fn, path);
    if (*fields < 2)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s line %zu: need features and a label, found "
                        "one field", fn, path, first);
    if (h->present && h->features + 1 != *fields)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the header says %zu features, but rows "
                        "have %zu fields (features + label)", fn, path, h->features, *fields);
    return AG_OK;
}

/* Second pass: the numbers, into d (already allocated). */
static ag_status csv_values(csv_text *c, const csv_header *h, nn_dataset *d, nn_error *err)
{
    ag_dtype dt = ag_tensor_dtype(d->x);
    void *x = ag_data(d->x), *lab = ag_data(d->labels);
    char buf[FIELD_MAX];
    double v, max_label = 0;
    for (size_t r = 0; r < d->n && next_line(c); r++) {
        const char *s = c->ls;
        for (size_t j = 0; j <= d->features; j++) {
            size_t len = take_field(&s, c->le, buf, sizeof buf);
            if (!parse_number(buf, len, &v))
                return nn__fail(err, AG_ERR_FORMAT, "nn_csv_load: %s line %zu, field %zu: '%s%s' "
                                "is not a finite number", c->path, c->line, j + 1, buf,
                                len >= sizeof buf ? "..." : "");
            if (dt == AG_F32 && !isfinite((float)v)) /* e.g. 1e39: finite, but not in f32 */
                return nn__fail(err, AG_ERR_FORMAT, "nn_csv_load: %s line %zu, field %zu: '%s' "
                                "is out of the range of f32", c->path, c->line, j + 1, buf);
            if (j < d->features) {
                nn__set(dt, x, r * d->features + j, v);
                continue;
            }
            size_t limit = h->present ? h->classes : LABEL_LIMIT;
            if (v < 0 || v != floor(v) || v >= (double)limit)
                return nn__fail(err, AG_ERR_FORMAT, "nn_csv_load: %s line %zu: label '%s' is "
                                "not a class index (an integer in [0, %zu))", c->path, c->line,
                                buf, limit);
            nn__set(dt, lab, r, v);
            max_label = v > max_label ? v : max_label;
        }
    }
    d->classes = h->present ? h->classes : (size_t)max_label + 1;
    return AG_OK;
}

/* The whole file as text in engine memory (freed with *owner). */
static ag_status slurp(const char *path, ag_tensor **owner, const char **text, size_t *len,
                       nn_error *err)
{
    const char *fn = "nn_csv_load";
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
    return s;
}

ag_status nn_csv_load(const char *path, ag_dtype dt, nn_dataset *out, nn_error *err)
{
    if (!path || !out)
        return nn__fail(err, AG_ERR_NULL, "nn_csv_load: %s is NULL", path ? "out" : "path");
    *out = (nn_dataset){0};
    if (ag_dtype_size(dt) == 0)
        return nn__fail(err, AG_ERR_DTYPE, "nn_csv_load: dtype %d is not AG_F32 or AG_F64",
                        (int)dt);
    ag_tensor *owner = NULL;
    const char *text;
    size_t len, fields, rows;
    ag_status s = slurp(path, &owner, &text, &len, err);
    if (s != AG_OK)
        return s;
    csv_text c = {.path = path, .p = text, .end = text + len};
    csv_header h = {0};
    s = csv_shape(&c, &h, &fields, &rows, err);
    nn_dataset d = {.n = rows, .features = fields - 1};
    if (s == AG_OK) {
        d.x = ag_zeros(dt, (size_t[]){rows, fields - 1}, 2);
        d.labels = ag_zeros(dt, &d.n, 1);
        if (!d.x || !d.labels)
            s = nn__fail(err, AG_ERR_NOMEM, "nn_csv_load: out of memory for %zu rows", rows);
    }
    c = (csv_text){.path = path, .p = text, .end = text + len};
    if (s == AG_OK && h.present)
        next_line(&c); /* past the header */
    if (s == AG_OK)
        s = csv_values(&c, &h, &d, err);
    ag_tensor_free(owner);
    if (s != AG_OK) {
        nn_dataset_free(&d);
        return s;
    }
    *out = d;
    return nn__ok(err);
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
