/* safetensors.c: the safetensors format for f32 and f64 tensors, and an
 * MLP's parameters as the state_dict of PyTorch's nn.Sequential.
 *
 *   u64 little-endian N, N bytes of JSON (padded with spaces), the data:
 *   {"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [3, 4],
 *    "data_offsets": [0, 48]}, ...}, offsets relative to the data's start.
 *
 * The reader's JSON parser knows only what such a header holds (objects,
 * strings with escapes, non-negative integers, arrays of them) and is
 * strict about it. It runs twice over the header: once to check it and
 * count the tensors and the bytes of their names, then, into one block of
 * that size, to keep them. The offsets are checked to tile the data
 * exactly before any tensor is allocated. */
#include "nn_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ST_HEADER_MAX 100000000u /* the reference implementation's limit */
#define ST_META "__metadata__"
#define ST_SHORT 16              /* keys and dtypes compared, not kept */

/* The length of the valid UTF-8 character at s (n bytes left), 0 if none:
 * no overlong forms, no surrogates, nothing past U+10FFFF (RFC 3629). */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4)
        return 0;
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), k;
    for (size_t i = 0; i < n; i += k)
        if (!(k = utf8_char(p + i, n - i)))
            return false;
    return true;
}

/* "[3,4]" into buf. */
static const char *shape_str(const size_t *shape, size_t rank, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < rank && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ",%zu" : "%zu", shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}

/* ---------------------------------------------------------------- save */

/* The header is emitted twice: counted (f NULL) to learn its length, then
 * written. */
typedef struct {
    FILE *f;
    size_t n;
    int err;
} sink;

static void put(sink *s, const char *p, size_t n)
{
    s->n += n;
    if (s->f && !s->err && fwrite(p, 1, n, s->f) != n)
        s->err = errno ? errno : EIO;
}

static void put_str(sink *s, const char *p) { put(s, p, strlen(p)); }

/* A JSON string: '"' and '\' escaped, control characters as \u00XX. */
static void put_json(sink *s, const char *str)
{
    put(s, "\"", 1);
    for (const char *p = str; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\')
            snprintf(esc, sizeof esc, "\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)(unsigned char)*p);
        else
            esc[0] = *p, esc[1] = '\0';
        put_str(s, esc);
    }
    put(s, "\"", 1);
}

typedef struct {
    const nn_param *tensors;
    size_t n;
    const nn_meta *meta;
    size_t n_meta;
    size_t header_len; /* after padding: the data start 8-byte aligned */
} st_out;

static void put_header(sink *s, const st_out *o)
{
    char buf[64];
    put(s, "{", 1);
    for (size_t i = 0; i < o->n_meta; i++) {
        put_str(s, i ? "," : "\"" ST_META "\":{");
        put_json(s, o->meta[i].key);
        put(s, ":", 1);
        put_json(s, o->meta[i].value);
        put_str(s, i + 1 == o->n_meta ? "}" : "");
    }
    size_t offset = 0;
    for (size_t i = 0; i < o->n; i++) {
        const ag_tensor *x = o->tensors[i].tensor;
        size_t bytes = ag_tensor_numel(x) * ag_dtype_size(ag_tensor_dtype(x));
        put_str(s, i || o->n_meta ? "," : "");
        put_json(s, o->tensors[i].name);
        put_str(s, ag_tensor_dtype(x) == AG_F32 ? ":{\"dtype\":\"F32\",\"shape\":"
                                                : ":{\"dtype\":\"F64\",\"shape\":");
        put_str(s, shape_str(ag_tensor_shape(x), ag_tensor_rank(x), buf, sizeof buf));
        snprintf(buf, sizeof buf, ",\"data_offsets\":[%zu,%zu]}", offset, offset + bytes);
        put_str(s, buf);
        offset += bytes;
    }
    put(s, "}", 1);
    while (s->n < o->header_len)
        put(s, " ", 1);
}

static int write_st(FILE *f, const void *ctx)
{
    const st_out *o = ctx;
    unsigned char len[8];
    for (size_t i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)o->header_len >> (8 * i));
    sink s = {.f = f};
    if (fwrite(len, 1, 8, f) != 8)
        return errno ? errno : EIO;
    put_header(&s, o);
    for (size_t i = 0; i < o->n && !s.err; i++) {
        const ag_tensor *x = o->tensors[i].tensor;
        s.err = nn__write_le(f, ag_data(x), ag_tensor_numel(x),
                             ag_dtype_size(ag_tensor_dtype(x)));
    }
    return s.err;
}

/* Names and keys: present, valid UTF-8, unique; tensors present. */
static ag_status check_save_args(const char *fn, const st_out *o, nn_error *err)
{
    for (size_t i = 0; i < o->n; i++) {
        const char *name = o->tensors[i].name;
        if (!name || !o->tensors[i].tensor)
            return nn__fail(err, AG_ERR_VALUE, "%s: tensors[%zu] has a NULL %s", fn, i,
                            name ? "tensor" : "name");
        if (!name[0] || !utf8_valid(name) || strcmp(name, ST_META) == 0)
            return nn__fail(err, AG_ERR_VALUE, "%s: tensors[%zu]'s name '%s' is empty, not "
                            "UTF-8 or \"" ST_META "\"", fn, i, name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->tensors[j].name, name) == 0)
                return nn__fail(err, AG_ERR_VALUE, "%s: the name '%s' is given twice (tensors[%zu] "
                                "and [%zu])", fn, name, j, i);
    }
    for (size_t i = 0; i < o->n_meta; i++) {
        const char *key = o->meta[i].key, *value = o->meta[i].value;
        if (!key || !value || !utf8_valid(key) || !utf8_valid(value))
            return nn__fail(err, AG_ERR_VALUE, "%s: meta[%zu]'s key or value is NULL or not "
                            "UTF-8", fn, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->meta[j].key, key) == 0)
                return nn__fail(err, AG_ERR_VALUE, "%s: the metadata key '%s' is given twice",
                                fn, key);
    }
    return AG_OK;
}

static ag_status save_named(const char *fn, const char *path, const st_out *o, nn_error *err)
{
    ag_status s = check_save_args(fn, o, err);
    if (s != AG_OK)
        return s;
    st_out padded = *o;
    sink count = {0};
    put_header(&count, o);
    padded.header_len = (count.n + 7) / 8 * 8;
    return nn__save_atomic(fn, path, write_st, &padded, err);
}

ag_status nn_safetensors_save(const char *path, const nn_param *tensors, size_t n,
                              const nn_meta *meta, size_t n_meta, nn_error *err)
{
    const char *fn = "nn_safetensors_save";
    if (!path || (!tensors && n) || (!meta && n_meta))
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn,
                        !path ? "path" : !tensors && n ? "tensors" : "meta");
    st_out o = {.tensors = tensors, .n = n, .meta = meta, .n_meta = n_meta};
    return save_named(fn, path, &o, err);
}

/* ---------------------------------------------------------------- load */

typedef struct {
    const char *name;
    ag_dtype dtype;
    size_t rank, shape[AG_MAX_RANK];
    uint64_t begin, end;
} st_entry;

struct nn_safetensors {
    ag_tensor *mem; /* owns this struct, the arrays and the strings */
    nn_param *tensors;
    size_t n;
    nn_meta *meta;
    size_t n_meta;
    st_entry *entries;   /* n, in the header's order */
    const void **order;  /* n or n_meta: for sorting */
    char *strings;       /* names, keys and values, NUL-terminated */
};

/* The parser: pass 1 (entries NULL) checks and counts, pass 2 keeps. */
typedef struct {
    const char *fn, *path;
    const unsigned char *start, *p, *end;
    nn_error *err;
    st_entry *entries;
    nn_meta *meta;
    char *strings;
    size_t n, n_meta, n_chars;
    bool has_meta;
} jp;

static ag_status jbad(const jp *j, const char *what)
{
    return nn__fail(j->err, AG_ERR_FORMAT, "%s: %s: bad header at byte %zu: %s", j->fn, j->path,
                    8 + (size_t)(j->p - j->start), what);
}

static void jws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool jeat(jp *j, char c)
{
    jws(j);
    if (j->p < j->end && *j->p == (unsigned char)c) {
        j->p++;
        return true;
    }
    return false;
}

static void put_byte(char *out, size_t cap, size_t *n, unsigned b)
{
    if (*n < cap)
        out[*n] = (char)b;
    (*n)++;
}

static void put_utf8(char *out, size_t cap, size_t *n, uint32_t cp)
{
    if (cp < 0x80) {
        put_byte(out, cap, n, cp);
    } else if (cp < 0x800) {
        put_byte(out, cap, n, 0xC0 | cp >> 6);
        put_byte(out, cap, n, 0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        put_byte(out, cap, n, 0xE0 | cp >> 12);
        put_byte(out, cap, n, 0x80 | (cp >> 6 & 0x3F));
        put_byte(out, cap, n, 0x80 | (cp & 0x3F));
    } else {
        put_byte(out, cap, n, 0xF0 | cp >> 18);
        put_byte(out, cap, n, 0x80 | (cp >> 12 & 0x3F));
        put_byte(out, cap, n, 0x80 | (cp >> 6 & 0x3F));
        put_byte(out, cap, n, 0x80 | (cp & 0x3F));
    }
}

/* Four hex digits after "\u". */
static bool hex4(jp *j, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++, j->p++) {
        if (j->p >= j->end)
            return false;
        unsigned c = *j->p;
        unsigned d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                   : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 16;
        if (d == 16)
            return false;
        *v = *v << 4 | d;
    }
    return true;
}

/* An escape after '\': one character, or \uXXXX (a surrogate pair joined). */
static ag_status jescape(jp *j, char *out, size_t cap, size_t *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (j->p >= j->end)
        return jbad(j, "the header ends in a string");
    const char *e = strchr(from, *j->p);
    if (*j->p && e) {
        j->p++;
        put_byte(out, cap, n, (unsigned char)to[e - from]);
        return AG_OK;
    }
    uint32_t cp, lo;
    if (*j->p++ != 'u' || !hex4(j, &cp))
        return jbad(j, "a bad escape in a string");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u' || (j->p += 2, !hex4(j, &lo)) ||
            lo < 0xDC00 || lo > 0xDFFF)
            return jbad(j, "a high surrogate without its low half");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) {
        return jbad(j, cp ? "a lone low surrogate" : "\\u0000 in a string");
    }
    put_utf8(out, cap, n, cp);
    return AG_OK;
}

/* A string, decoded into out (its first cap bytes; out may be NULL with cap
 * 0); *len receives the decoded length. */
static ag_status jstring(jp *j, char *out, size_t cap, size_t *len)
{
    if (!jeat(j, '"'))
        return jbad(j, "expected a string");
    size_t n = 0, k;
    while (j->p < j->end && *j->p != '"') {
        ag_status s = AG_OK;
        if (*j->p < 0x20)
            return jbad(j, "a control character in a string");
        if (*j->p == '\\') {
            j->p++;
            s = jescape(j, out, cap, &n);
        } else if (!(k = utf8_char(j->p, (size_t)(j->end - j->p)))) {
            return jbad(j, "a string is not UTF-8");
        } else {
            for (; k > 0; k--)
                put_byte(out, cap, &n, *j->p++);
        }
        if (s != AG_OK)
            return s;
    }
    if (j->p >= j->end)
        return jbad(j, "the header ends in a string");
    j->p++;
    *len = n;
    return AG_OK;
}

/* A string kept NUL-terminated in the strings block (pass 2), or counted. */
static ag_status jkeep(jp *j, const char **where)
{
    size_t len;
    char *out = j->strings ? j->strings + j->n_chars : NULL;
    ag_status s = jstring(j, out, out ? SIZE_MAX : 0, &len);
    if (s != AG_OK)
        return s;
    if (out) {
        out[len] = '\0';
        *where = out;
    }
    j->n_chars += len + 1;
    return AG_OK;
}

/* A short string compared with names, not kept ("" if longer than fits). */
static ag_status jshort(jp *j, char buf[ST_SHORT])
{
    size_t len = 0;
    ag_status s = jstring(j, buf, ST_SHORT, &len);
    buf[len < ST_SHORT ? len : 0] = '\0';
    return s;
}

/* A non-negative integer without sign, fraction, exponent or leading zero. */
static ag_status juint(jp *j, uint64_t *v)
{
    jws(j);
    const unsigned char *start = j->p;
    uint64_t x = 0;
    for (; j->p < j->end && *j->p >= '0' && *j->p <= '9'; j->p++) {
        unsigned d = *j->p - '0';
        if (x > (UINT64_MAX - d) / 10)
            return jbad(j, "an integer over 2^64 - 1");
        x = x * 10 + d;
    }
    bool more = j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E');
    if (j->p == start || more || (j->p - start > 1 && *start == '0'))
        return jbad(j, "expected a non-negative integer");
    *v = x;
    return AG_OK;
}

/* [a, b, ...] of at most max integers; *count receives how many. */
static ag_status juints(jp *j, uint64_t *v, size_t max, size_t *count, const char *too_many)
{
    if (!jeat(j, '['))
        return jbad(j, "expected '['");
    *count = 0;
    if (jeat(j, ']'))
        return AG_OK;
    do {
        if (*count == max)
            return jbad(j, too_many);
        ag_status s = juint(j, &v[(*count)++]);
        if (s != AG_OK)
            return s;
    } while (jeat(j, ','));
    return jeat(j, ']') ? AG_OK : jbad(j, "expected ',' or ']'");
}

/* One "key": value of a tensor's object. */
static ag_status tensor_field(jp *j, st_entry *e, unsigned *seen)
{
    char key[ST_SHORT], dtype[ST_SHORT];
    uint64_t v[AG_MAX_RANK];
    size_t count;
    ag_status s = jshort(j, key);
    int which = strcmp(key, "dtype") == 0 ? 0 : strcmp(key, "shape") == 0 ? 1
              : strcmp(key, "data_offsets") == 0 ? 2 : -1;
    if (s == AG_OK && (which < 0 || (*seen & 1u << which)))
        return jbad(j, "a tensor's key is not dtype, shape or data_offsets, or is repeated");
    if (s == AG_OK && !jeat(j, ':'))
        return jbad(j, "expected ':'");
    if (s != AG_OK)
        return s;
    *seen |= 1u << which;
    if (which == 0 && (s = jshort(j, dtype)) == AG_OK) {
        if (strcmp(dtype, "F32") != 0 && strcmp(dtype, "F64") != 0)
            return jbad(j, "a dtype other than F32 and F64 (not supported)");
        e->dtype = dtype[1] == '3' ? AG_F32 : AG_F64;
    } else if (which == 1 && (s = juints(j, v, AG_MAX_RANK, &e->rank, "a shape of more than "
                                         "AG_MAX_RANK (8) axes")) == AG_OK) {
        for (size_t i = 0; i < e->rank; i++)
            if ((e->shape[i] = (size_t)v[i]) != v[i])
                return jbad(j, "an axis size over SIZE_MAX");
    } else if (which == 2 && (s = juints(j, v, 2, &count, "data_offsets of more than 2")) ==
               AG_OK) {
        if (count != 2)
            return jbad(j, "data_offsets is not [begin, end]");
        e->begin = v[0];
        e->end = v[1];
    }
    return s;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}, each once. */
static ag_status tensor_entry(jp *j, st_entry *e)
{
    unsigned seen = 0;
    if (!jeat(j, '{'))
        return jbad(j, "a tensor is not an object");
    do {
        ag_status s = tensor_field(j, e, &seen);
        if (s != AG_OK)
            return s;
    } while (jeat(j, ','));
    if (!jeat(j, '}'))
        return jbad(j, "expected ',' or '}'");
    return seen == 7 ? AG_OK : jbad(j, "a tensor lacks dtype, shape or data_offsets");
}

/* {"key": "value", ...} */
static ag_status meta_object(jp *j)
{
    if (j->has_meta)
        return jbad(j, "\"" ST_META "\" is repeated");
    j->has_meta = true;
    if (!jeat(j, '{'))
        return jbad(j, "\"" ST_META "\" is not an object");
    if (jeat(j, '}'))
        return AG_OK;
    do {
        nn_meta m = {0};
        ag_status s = jkeep(j, &m.key);
        if (s == AG_OK && !jeat(j, ':'))
            s = jbad(j, "expected ':'");
        if (s == AG_OK)
            s = jkeep(j, &m.value);
        if (s != AG_OK)
            return s;
        if (j->meta)
            j->meta[j->n_meta] = m;
        j->n_meta++;
    } while (jeat(j, ','));
    return jeat(j, '}') ? AG_OK : jbad(j, "expected ',' or '}'");
}

/* "name": {...} or "__metadata__": {...} */
static ag_status member(jp *j)
{
    const unsigned char *at = j->p;
    char key[ST_SHORT];
    ag_status s = jshort(j, key);
    if (s == AG_OK && !jeat(j, ':'))
        s = jbad(j, "expected ':'");
    if (s != AG_OK)
        return s;
    if (strcmp(key, ST_META) == 0)
        return meta_object(j);
    st_entry e = {0};
    const unsigned char *value = j->p;
    j->p = at; /* the name again, to keep it */
    s = jkeep(j, &e.name);
    j->p = value;
    if (s == AG_OK)
        s = tensor_entry(j, &e);
    if (s == AG_OK && j->entries)
        j->entries[j->n] = e;
    j->n++;
    return s;
}

static ag_status parse_header(jp *j)
{
    if (!jeat(j, '{'))
        return jbad(j, "the header is not a JSON object");
    if (!jeat(j, '}')) {
        do {
            ag_status s = member(j);
            if (s != AG_OK)
                return s;
        } while (jeat(j, ','));
        if (!jeat(j, '}'))
            return jbad(j, "expected ',' or '}'");
    }
    jws(j);
    return j->p == j->end ? AG_OK : jbad(j, "bytes after the JSON object");
}

/* The struct, its arrays and the strings of a checked header, in one block. */
static nn_safetensors *alloc_result(const jp *counted, const char *fn, nn_error *err)
{
    size_t n = counted->n, n_order = n > counted->n_meta ? n : counted->n_meta;
    nn__layout lay = {0};
    nn__layout_add(&lay, 1, sizeof(nn_safetensors));
    size_t o_tensors = nn__layout_add(&lay, n, sizeof(nn_param));
    size_t o_meta = nn__layout_add(&lay, counted->n_meta, sizeof(nn_meta));
    size_t o_entries = nn__layout_add(&lay, n, sizeof(st_entry));
    size_t o_order = nn__layout_add(&lay, n_order, sizeof(void *));
    size_t o_strings = nn__layout_add(&lay, counted->n_chars, 1);
    ag_tensor *mem = NULL;
    unsigned char *base = lay.overflow ? NULL : nn__mem(lay.size, &mem);
    if (!base) {
        nn__fail(err, AG_ERR_NOMEM, "%s: %s: out of memory for the header", fn, counted->path);
        return NULL;
    }
    nn_safetensors *st = (nn_safetensors *)base;
    st->mem = mem;
    st->tensors = (nn_param *)(base + o_tensors);
    st->meta = (nn_meta *)(base + o_meta);
    st->entries = (st_entry *)(base + o_entries);
    st->order = (const void **)(base + o_order);
    st->n = n;
    st->strings = (char *)(base + o_strings);
    st->n_meta = counted->n_meta;
    return st;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int by_offsets(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    return x->begin != y->begin ? (x->begin > y->begin ? 1 : -1)
         : x->end != y->end ? (x->end > y->end ? 1 : -1) : 0;
}

/* The first string of order[0..n) that appears twice, or NULL. */
static const char *first_repeat(const void **order, size_t n)
{
    qsort(order, n, sizeof *order, by_string);
    for (size_t i = 1; i < n; i++)
        if (strcmp(order[i - 1], order[i]) == 0)
            return order[i];
    return NULL;
}

/* An entry's offsets against its dtype and shape and the data's size. */
static ag_status check_entry(const st_entry *e, uint64_t data_size, const char *fn,
                             const char *path, nn_error *err)
{
    char sh[NN_SHAPE_BUF];
    size_t bytes = ag_dtype_size(e->dtype);
    for (size_t i = 0; i < e->rank; i++)
        if (!nn__mul(bytes, e->shape[i], &bytes))
            return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the byte size of '%s' %s overflows", fn,
                            path, e->name, shape_str(e->shape, e->rank, sh, sizeof sh));
    if (e->begin > e->end || e->end > data_size)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: data_offsets [%llu, %llu] of '%s' are not "
                        "within the %llu data bytes", fn, path, (unsigned long long)e->begin,
                        (unsigned long long)e->end, e->name, (unsigned long long)data_size);
    if (e->end - e->begin != bytes)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: '%s' is %s %s, %zu bytes, but its "
                        "data_offsets [%llu, %llu] hold %llu", fn, path, e->name,
                        e->dtype == AG_F32 ? "F32" : "F64", shape_str(e->shape, e->rank, sh,
                        sizeof sh), bytes, (unsigned long long)e->begin,
                        (unsigned long long)e->end, (unsigned long long)(e->end - e->begin));
    return AG_OK;
}

/* Unique names and keys; offsets that tile the data exactly. */
static ag_status check_entries(nn_safetensors *st, uint64_t data_size, const char *fn,
                               const char *path, nn_error *err)
{
    for (size_t i = 0; i < st->n; i++)
        st->order[i] = st->entries[i].name;
    const char *dup = first_repeat(st->order, st->n);
    if (dup)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the tensor name '%s' appears twice", fn,
                        path, dup);
    for (size_t i = 0; i < st->n_meta; i++)
        st->order[i] = st->meta[i].key;
    if ((dup = first_repeat(st->order, st->n_meta)))
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the metadata key '%s' appears twice", fn,
                        path, dup);
    for (size_t i = 0; i < st->n; i++) {
        ag_status s = check_entry(&st->entries[i], data_size, fn, path, err);
        if (s != AG_OK)
            return s;
        st->order[i] = &st->entries[i];
    }
    qsort(st->order, st->n, sizeof *st->order, by_offsets);
    uint64_t pos = 0;
    for (size_t i = 0; i < st->n; i++) {
        const st_entry *e = st->order[i];
        if (e->begin < pos)
            return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the data of '%s' [%llu, %llu] overlaps "
                            "another tensor's", fn, path, e->name, (unsigned long long)e->begin,
                            (unsigned long long)e->end);
        if (e->begin > pos)
            return nn__fail(err, AG_ERR_FORMAT, "%s: %s: data bytes %llu to %llu belong to no "
                            "tensor", fn, path, (unsigned long long)pos,
                            (unsigned long long)e->begin);
        pos = e->end;
    }
    if (pos != data_size)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: %llu data bytes after the last tensor's",
                        fn, path, (unsigned long long)(data_size - pos));
    return AG_OK;
}

/* The tensors, allocated now that their sizes match the file, read in the
 * data's order (st->order, sorted by check_entries). */
static ag_status read_tensors(nn_safetensors *st, FILE *f, const char *fn, const char *path,
                              nn_error *err)
{
    for (size_t i = 0; i < st->n; i++) {
        const st_entry *e = &st->entries[i];
        st->tensors[i].name = e->name;
        if (!(st->tensors[i].tensor = ag_zeros(e->dtype, e->shape, e->rank)))
            return nn__fail(err, AG_ERR_NOMEM, "%s: %s: out of memory for '%s'", fn, path,
                            e->name);
    }
    for (size_t i = 0; i < st->n; i++) {
        const st_entry *e = st->order[i];
        ag_tensor *x = st->tensors[e - st->entries].tensor;
        size_t n = ag_tensor_numel(x), es = ag_dtype_size(e->dtype);
        if (fread(ag_data(x), es, n, f) != n)
            return nn__fail(err, AG_ERR_IO, "%s: %s: read error in the data of '%s' (did the "
                            "file change?)", fn, path, e->name);
        if (!nn__host_little_endian())
            nn__swap_bytes(ag_data(x), n, es);
    }
    return AG_OK;
}

/* The header's length, checked against the file's size. */
static ag_status read_length(FILE *f, const char *fn, const char *path, size_t size,
                             size_t *len, nn_error *err)
{
    unsigned char b[8];
    if (size < 8 || fread(b, 1, 8, f) != 8)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: truncated: %zu bytes, less than the 8 of "
                        "the header length", fn, path, size);
    uint64_t n = 0;
    for (size_t i = 8; i-- > 0;)
        n = n << 8 | b[i];
    if (n > size - 8 || n > ST_HEADER_MAX)
        return nn__fail(err, AG_ERR_FORMAT, "%s: %s: the header length %llu is more than the "
                        "%zu bytes after it%s", fn, path, (unsigned long long)n, size - 8,
                        n > ST_HEADER_MAX ? " or the limit of 100,000,000" : "");
    *len = (size_t)n;
    return AG_OK;
}

/* Both passes over the header (read into memory), then the tensors. */
static ag_status load_from(FILE *f, const char *fn, const char *path, size_t size,
                           nn_safetensors **out, nn_error *err)
{
    size_t len = 0;
    ag_status s = read_length(f, fn, path, size, &len, err);
    if (s != AG_OK)
        return s;
    ag_tensor *owner = NULL;
    unsigned char *h = nn__mem(len + 1, &owner); /* + 1: an empty header is an array too */
    if (!h)
        return nn__fail(err, AG_ERR_NOMEM, "%s: %s: out of memory for the header", fn, path);
    jp j = {.fn = fn, .path = path, .start = h, .p = h, .end = h + len, .err = err};
    if (fread(h, 1, len, f) != len)
        s = nn__fail(err, AG_ERR_IO, "%s: %s: read error in the header", fn, path);
    if (s == AG_OK)
        s = parse_header(&j);
    nn_safetensors *st = NULL;
    if (s == AG_OK && !(st = alloc_result(&j, fn, err)))
        s = AG_ERR_NOMEM;
    if (s == AG_OK) {
        jp keep = {.fn = fn, .path = path, .start = h, .p = h, .end = h + len, .err = err,
                   .entries = st->entries, .meta = st->meta, .strings = st->strings};
        s = parse_header(&keep);
    }
    if (s == AG_OK)
        s = check_entries(st, (uint64_t)(size - 8 - len), fn, path, err);
    if (s == AG_OK)
        s = read_tensors(st, f, fn, path, err);
    ag_tensor_free(owner);
    if (s != AG_OK) {
        nn_safetensors_free(st);
        return s;
    }
    *out = st;
    return AG_OK;
}

/* nn_safetensors_load, naming fn in messages. */
static ag_status load_named(const char *fn, const char *path, nn_safetensors **out,
                            nn_error *err)
{
    FILE *f;
    size_t size;
    ag_status s = nn__open_sized(fn, path, &f, &size, err);
    if (s != AG_OK)
        return s;
    s = load_from(f, fn, path, size, out, err);
    fclose(f);
    return s;
}

ag_status nn_safetensors_load(const char *path, nn_safetensors **out, nn_error *err)
{
    if (!path || !out)
        return nn__fail(err, AG_ERR_NULL, "nn_safetensors_load: %s is NULL",
                        path ? "out" : "path");
    *out = NULL;
    ag_status s = load_named("nn_safetensors_load", path, out, err);
    return s == AG_OK ? nn__ok(err) : s;
}

const nn_param *nn_safetensors_tensors(const nn_safetensors *st, size_t *n)
{
    if (n)
        *n = st ? st->n : 0;
    return st ? st->tensors : NULL;
}

ag_tensor *nn_safetensors_get(const nn_safetensors *st, const char *name)
{
    for (size_t i = 0; st && name && i < st->n; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return st->tensors[i].tensor;
    return NULL;
}

const nn_meta *nn_safetensors_meta(const nn_safetensors *st, size_t *n)
{
    if (n)
        *n = st ? st->n_meta : 0;
    return st ? st->meta : NULL;
}

const char *nn_safetensors_meta_get(const nn_safetensors *st, const char *key)
{
    for (size_t i = 0; st && key && i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0)
            return st->meta[i].value;
    return NULL;
}

void nn_safetensors_free(nn_safetensors *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n; i++)
        ag_tensor_free(st->tensors[i].tensor);
    ag_tensor_free(st->mem); /* the struct itself: last */
}

/* ------------------------------------------------ MLP <-> nn.Sequential */

#define ST_NAME_MAX 32 /* "<size_t>.weight" */

/* Linear l's index in the nn.Sequential: every activation but identity is
 * a module of its own after its Linear. */
static size_t module_index(const nn_act *acts, size_t l)
{
    size_t idx = l;
    for (size_t i = 0; i < l; i++)
        idx += acts[i] != NN_IDENTITY;
    return idx;
}

static void param_names(const nn_act *acts, size_t l, char w[ST_NAME_MAX], char b[ST_NAME_MAX])
{
    snprintf(w, ST_NAME_MAX, "%zu.weight", module_index(acts, l));
    snprintf(b, ST_NAME_MAX, "%zu.bias", module_index(acts, l));
}

/* A new [cols, rows] tensor holding x [rows, cols] transposed. */
static ag_tensor *transposed(const ag_tensor *x)
{
    size_t rows = ag_tensor_shape(x)[0], cols = ag_tensor_shape(x)[1];
    ag_dtype dt = ag_tensor_dtype(x);
    ag_tensor *t = ag_zeros(dt, (size_t[]){cols, rows}, 2);
    for (size_t i = 0; t && i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            nn__set(dt, ag_data(t), j * rows + i, nn__get(dt, ag_data(x), i * cols + j));
    return t;
}

ag_status nn_mlp_save_safetensors(const nn_mlp *net, const char *path, nn_error *err)
{
    const char *fn = "nn_mlp_save_safetensors";
    if (!net || !path)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, net ? "path" : "net");
    const nn_spec *sp = nn_mlp_spec(net);
    size_t L = sp->n_layers, n_acts = 0;
    const nn_param *ps = nn_mlp_params(net, NULL);
    nn_param out[2 * NN_MAX_LAYERS] = {{0}};
    char names[2 * NN_MAX_LAYERS][ST_NAME_MAX], acts[NN_MAX_LAYERS * 12] = "", slope[32];
    ag_status s = AG_OK;
    for (size_t l = 0; l < L; l++) {
        param_names(sp->acts, l, names[2 * l], names[2 * l + 1]);
        out[2 * l] = (nn_param){names[2 * l], transposed(ps[2 * l].tensor)};
        out[2 * l + 1] = (nn_param){names[2 * l + 1], ps[2 * l + 1].tensor};
        n_acts += (size_t)snprintf(acts + n_acts, sizeof acts - n_acts, l ? ",%s" : "%s",
                                   nn_act_name(sp->acts[l]));
        if (!out[2 * l].tensor && s == AG_OK)
            s = nn__fail(err, AG_ERR_NOMEM, "%s: out of memory for %s", fn, names[2 * l]);
    }
    snprintf(slope, sizeof slope, "%.17g", sp->leaky_slope);
    const nn_meta meta[] = {{"format", "pt"}, {"nn.activations", acts}, {"nn.leaky_slope", slope}};
    st_out o = {.tensors = out, .n = 2 * L, .meta = meta, .n_meta = 3};
    if (s == AG_OK)
        s = save_named(fn, path, &o, err);
    for (size_t l = 0; l < L; l++)
        ag_tensor_free(out[2 * l].tensor);
    return s;
}

/* "tanh,relu,identity" into acts; *n receives the count. */
static ag_status parse_acts(const char *fn, const char *path, const char *list, nn_act *acts,
                            size_t *n, nn_error *err)
{
    *n = 0;
    for (const char *p = list;; p++) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int a = 0; a < NN_ACT_COUNT && found < 0; a++)
            if (strlen(nn_act_name((nn_act)a)) == len && strncmp(p, nn_act_name((nn_act)a), len) == 0)
                found = a;
        if (found < 0 || *n == NN_MAX_LAYERS)
            return nn__fail(err, AG_ERR_VALUE, "%s: %s: nn.activations '%s': %s", fn, path, list,
                            found < 0 ? "an unknown activation name" : "too many layers");
        acts[(*n)++] = (nn_act)found;
        p += len;
        if (!*p)
            return AG_OK;
    }
}

/* The spec a file with our metadata describes: acts from nn.activations,
 * widths from the weights, dtype from the tensors, slope from
 * nn.leaky_slope. */
typedef struct {
    nn_spec spec;
    size_t sizes[NN_MAX_LAYERS + 1];
    nn_act acts[NN_MAX_LAYERS];
} file_spec;

static ag_status spec_of_file(const char *fn, const char *path, const nn_safetensors *st,
                              file_spec *fs, nn_error *err)
{
    const char *list = nn_safetensors_meta_get(st, "nn.activations");
    const char *slope = nn_safetensors_meta_get(st, "nn.leaky_slope");
    if (!list)
        return nn__fail(err, AG_ERR_VALUE, "%s: %s: no nn.activations metadata (not written by "
                        "nn_mlp_save_safetensors?): pass a spec", fn, path);
    size_t L;
    ag_status s = parse_acts(fn, path, list, fs->acts, &L, err);
    if (s != AG_OK)
        return s;
    char *end = NULL;
    fs->spec = (nn_spec){.n_layers = L, .sizes = fs->sizes, .acts = fs->acts,
                         .leaky_slope = slope ? strtod(slope, &end) : 0};
    if (slope && (!*slope || *end || !isfinite(fs->spec.leaky_slope)))
        return nn__fail(err, AG_ERR_VALUE, "%s: %s: nn.leaky_slope '%s' is not a finite number",
                        fn, path, slope);
    for (size_t i = 0; i < st->n; i++)
        if (st->entries[i].dtype != st->entries[0].dtype)
            return nn__fail(err, AG_ERR_DTYPE, "%s: %s: '%s' and '%s' differ in dtype: pass a "
                            "spec to convert", fn, path, st->entries[0].name, st->entries[i].name);
    fs->spec.dtype = st->n ? st->entries[0].dtype : AG_F32;
    for (size_t l = 0; l < L; l++) { /* widths; check_params checks them all */
        char w[ST_NAME_MAX], b[ST_NAME_MAX];
        param_names(fs->acts, l, w, b);
        const ag_tensor *W = nn_safetensors_get(st, w);
        bool ok = W && ag_tensor_rank(W) == 2;
        fs->sizes[l + 1] = ok ? ag_tensor_shape(W)[0] : 1;
        if (l == 0)
            fs->sizes[0] = ok ? ag_tensor_shape(W)[1] : 1;
    }
    return AG_OK;
}

/* The file's tensor name, if it is there with the shape PyTorch gives
 * parameter k (W [n_in, n_out] as [n_out, n_in], b [n_out] as it is). */
static ag_status check_param(const char *fn, const char *path, const nn_safetensors *st,
                             const char *name, const nn_spec *sp, size_t k, nn_error *err)
{
    const ag_tensor *src = nn_safetensors_get(st, name);
    size_t l = k / 2, rank = k % 2 ? 1 : 2;
    size_t want[2] = {sp->sizes[l + 1], sp->sizes[l]};
    char have[NN_SHAPE_BUF], wants[NN_SHAPE_BUF];
    if (!src)
        return nn__fail(err, AG_ERR_VALUE, "%s: %s: no tensor '%s' (the model's %c%zu)", fn,
                        path, name, k % 2 ? 'b' : 'W', l + 1);
    if (ag_tensor_rank(src) != rank || memcmp(ag_tensor_shape(src), want, rank * sizeof(size_t)))
        return nn__fail(err, AG_ERR_SHAPE, "%s: %s: '%s' is %s; the model's %c%zu needs %s", fn,
                        path, name, ag_shape_str(src, have, sizeof have), k % 2 ? 'b' : 'W',
                        l + 1, shape_str(want, rank, wants, sizeof wants));
    return AG_OK;
}

/* Every parameter of the spec sp is in the file, and nothing else: checked
 * before a model of the file's sizes is allocated. */
static ag_status check_params(const char *fn, const char *path, const nn_safetensors *st,
                              const nn_spec *sp, nn_error *err)
{
    char names[2 * NN_MAX_LAYERS][ST_NAME_MAX];
    for (size_t l = 0; l < sp->n_layers; l++) {
        param_names(sp->acts, l, names[2 * l], names[2 * l + 1]);
        for (size_t k = 2 * l; k < 2 * l + 2; k++) {
            ag_status s = check_param(fn, path, st, names[k], sp, k, err);
            if (s != AG_OK)
                return s;
        }
    }
    for (size_t i = 0; i < st->n; i++) {
        size_t k = 0;
        while (k < 2 * sp->n_layers && strcmp(names[k], st->tensors[i].name) != 0)
            k++;
        if (k == 2 * sp->n_layers)
            return nn__fail(err, AG_ERR_VALUE, "%s: %s: '%s' is not a parameter of the model "
                            "(%zu layers: %s ... %s)", fn, path, st->tensors[i].name,
                            sp->n_layers, names[0], names[2 * sp->n_layers - 1]);
    }
    return AG_OK;
}

/* The checked tensors into the model: weights transposed, in its dtype. */
static void copy_params(const nn_safetensors *st, nn_mlp *net)
{
    const nn_spec *sp = nn_mlp_spec(net);
    const nn_param *ps = nn_mlp_params(net, NULL);
    for (size_t k = 0; k < 2 * sp->n_layers; k++) {
        char names[2][ST_NAME_MAX];
        param_names(sp->acts, k / 2, names[0], names[1]);
        const ag_tensor *src = nn_safetensors_get(st, names[k % 2]);
        ag_tensor *dst = ps[k].tensor;
        size_t rows = ag_tensor_shape(dst)[0], cols = k % 2 ? 1 : ag_tensor_shape(dst)[1];
        ag_dtype sd = ag_tensor_dtype(src), dd = ag_tensor_dtype(dst);
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++)
                nn__set(dd, ag_data(dst), i * cols + j, nn__get(sd, ag_data(src), j * rows + i));
    }
}

/* The file's nn.activations, when it has them, must be the model's. */
static ag_status check_acts_agree(const char *fn, const char *path, const nn_safetensors *st,
                                  const nn_spec *sp, nn_error *err)
{
    const char *list = nn_safetensors_meta_get(st, "nn.activations");
    nn_act acts[NN_MAX_LAYERS];
    size_t L;
    if (!list)
        return AG_OK;
    ag_status s = parse_acts(fn, path, list, acts, &L, err);
    if (s == AG_OK && (L != sp->n_layers || memcmp(acts, sp->acts, L * sizeof *acts) != 0))
        s = nn__fail(err, AG_ERR_VALUE, "%s: %s: the file's activations (%s) are not the "
                     "spec's", fn, path, list);
    return s;
}

/* A spec from the caller is checked (by nn_mlp_new's rules) and its model
 * allocated first; a spec read from the file is checked against the
 * tensors first, so its sizes are backed by the file's data. */
static ag_status import_model(const char *fn, const char *path, const nn_safetensors *st,
                              const nn_spec *spec, nn_mlp **out, nn_error *err)
{
    file_spec fs;
    ag_status s = spec ? AG_OK : spec_of_file(fn, path, st, &fs, err);
    if (s == AG_OK && !spec)
        s = check_params(fn, path, st, &fs.spec, err);
    nn_mlp *net = NULL;
    if (s == AG_OK)
        s = nn__mlp_new_zeroed(spec ? spec : &fs.spec, fn, &net, err);
    if (s == AG_OK && spec)
        s = check_acts_agree(fn, path, st, nn_mlp_spec(net), err);
    if (s == AG_OK && spec)
        s = check_params(fn, path, st, nn_mlp_spec(net), err);
    if (s != AG_OK) {
        nn_mlp_free(net);
        return s;
    }
    copy_params(st, net);
    *out = net;
    return AG_OK;
}

ag_status nn_mlp_load_safetensors(const char *path, const nn_spec *spec, nn_mlp **out,
                                  nn_error *err)
{
    const char *fn = "nn_mlp_load_safetensors";
    if (!path || !out)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, path ? "out" : "path");
    *out = NULL;
    nn_safetensors *st = NULL;
    ag_status s = load_named(fn, path, &st, err);
    if (s == AG_OK)
        s = import_model(fn, path, st, spec, out, err);
    nn_safetensors_free(st);
    return s == AG_OK ? nn__ok(err) : s;
}
