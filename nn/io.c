/* io.c: saving and loading a model in the format documented in nn.h.
 * Loading reads into a fresh model and checks every field, the file's size
 * and the checksum before the model is handed out; any failure frees it. */
#include "nn_internal.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define FORMAT_VERSION 1u
#define PATH_MAX_LEN 4096
static const unsigned char MAGIC[8] = {0x89, 'N', 'N', 'M', '\r', '\n', 0x1a, '\n'};

_Static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE-754 binary32/64 floats");

uint32_t nn_crc32(uint32_t crc, const void *data, size_t n)
{
    /* Half-byte table of the reflected polynomial 0xEDB88320: small and fast enough. */
    static const uint32_t tab[16] = {
        0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
        0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
        0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c};
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; p && i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ tab[crc & 15];
        crc = (crc >> 4) ^ tab[crc & 15];
    }
    return ~crc;
}

/* Little-endian encoding, independent of the machine's byte order. */
static void put_le(unsigned char *b, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | b[i];
    return v;
}

/* Element i of a dtype buffer as its IEEE bits, and back. */
static uint64_t elem_bits(ag_dtype dt, const void *p, size_t i)
{
    if (dt == AG_F32) {
        uint32_t u;
        memcpy(&u, (const float *)p + i, 4);
        return u;
    }
    uint64_t u;
    memcpy(&u, (const double *)p + i, 8);
    return u;
}

static void set_elem_bits(ag_dtype dt, void *p, size_t i, uint64_t bits)
{
    if (dt == AG_F32) {
        uint32_t u = (uint32_t)bits;
        memcpy((float *)p + i, &u, 4);
    } else {
        memcpy((double *)p + i, &bits, 8);
    }
}

/* ---------------------------------------------------------------- save */

typedef struct {
    FILE *f;
    uint32_t crc;
    bool failed;
} writer;

static void w_bytes(writer *w, const void *p, size_t n)
{
    w->crc = nn_crc32(w->crc, p, n);
    if (!w->failed && fwrite(p, 1, n, w->f) != n)
        w->failed = true;
}

static void w_int(writer *w, uint64_t v, size_t n)
{
    unsigned char b[8];
    put_le(b, v, n);
    w_bytes(w, b, n);
}

static void write_model(writer *w, const nn_mlp *net)
{
    const nn_spec *s = nn_mlp_spec(net);
    uint64_t slope;
    memcpy(&slope, &s->leaky_slope, 8);
    w_bytes(w, MAGIC, sizeof MAGIC);
    w_int(w, FORMAT_VERSION, 4);
    w_int(w, s->dtype == AG_F32 ? 0 : 1, 4);
    w_int(w, s->n_layers, 4);
    w_int(w, 0, 4); /* reserved */
    w_int(w, slope, 8);
    for (size_t l = 0; l <= s->n_layers; l++)
        w_int(w, s->sizes[l], 8);
    for (size_t l = 0; l < s->n_layers; l++)
        w_int(w, (uint64_t)s->acts[l], 4);
    size_t P = nn_mlp_param_count(net), es = ag_dtype_size(s->dtype);
    w_int(w, P, 8);
    unsigned char buf[4096]; /* a multiple of both element sizes */
    const void *data = nn_mlp_data(net);
    for (size_t i = 0, k = 0; i < P; i++) {
        put_le(buf + k, elem_bits(s->dtype, data, i), es);
        k += es;
        if (k == sizeof buf || i + 1 == P) {
            w_bytes(w, buf, k);
            k = 0;
        }
    }
    uint32_t crc = w->crc;
    w_int(w, crc, 4);
}

ag_status nn_mlp_save(const nn_mlp *net, const char *path, nn_error *err)
{
    const char *fn = "nn_mlp_save";
    if (!net || !path)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, net ? "path" : "net");
    char tmp[PATH_MAX_LEN + 8];
    size_t len = strlen(path);
    if (len == 0 || len > PATH_MAX_LEN)
        return nn__fail(err, AG_ERR_VALUE, "%s: path is empty or longer than %d bytes", fn,
                        PATH_MAX_LEN);
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    writer w = {.f = fopen(tmp, "wb")};
    if (!w.f)
        return nn__fail(err, AG_ERR_IO, "%s: cannot create '%s': %s", fn, tmp, strerror(errno));
    write_model(&w, net);
    bool closed = fclose(w.f) == 0;
    if (w.failed || !closed) {
        remove(tmp);
        return nn__fail(err, AG_ERR_IO, "%s: cannot write '%s'", fn, tmp);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return nn__fail(err, AG_ERR_IO, "%s: cannot rename '%s' to '%s': %s", fn, tmp, path,
                        strerror(e));
    }
    return nn__ok(err);
}

/* ---------------------------------------------------------------- load */

typedef struct {
    FILE *f;
    const char *path;
    size_t size;      /* bytes in the file */
    size_t pos;       /* bytes read so far */
    uint32_t crc;     /* of the bytes read so far */
    bool io_error;
} reader;

/* Reads n bytes; false at the end of the file (truncated) or on an error. */
static bool r_bytes(reader *r, void *p, size_t n)
{
    size_t got = fread(p, 1, n, r->f);
    r->crc = nn_crc32(r->crc, p, got);
    r->pos += got;
    if (got != n && ferror(r->f))
        r->io_error = true;
    return got == n;
}

static bool r_int(reader *r, uint64_t *v, size_t n)
{
    unsigned char b[8];
    if (!r_bytes(r, b, n))
        return false;
    *v = get_le(b, n);
    return true;
}

static ag_status truncated(const reader *r, const char *field, nn_error *err)
{
    if (r->io_error)
        return nn__fail(err, AG_ERR_IO, "nn_mlp_load: %s: read error", r->path);
    return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: truncated: the file ends in the %s "
                    "(%zu bytes)", r->path, field, r->size);
}

/* The magic and the version, which say whether the rest can be read. */
static ag_status read_preamble(reader *r, nn_error *err)
{
    unsigned char m[sizeof MAGIC];
    size_t got = fread(m, 1, sizeof m, r->f);
    r->crc = nn_crc32(r->crc, m, got);
    r->pos = got;
    if (memcmp(m, MAGIC, got) != 0)
        return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: not an nn model file (bad magic)",
                        r->path);
    if (got < sizeof m)
        return got == 0 && !ferror(r->f)
                   ? nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: truncated: the file is empty",
                              r->path)
                   : truncated(r, "magic", err);
    uint64_t version;
    if (!r_int(r, &version, 4))
        return truncated(r, "version", err);
    if (version != FORMAT_VERSION)
        return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: unsupported version %u (this "
                        "library reads version %u)", r->path, (unsigned)version, FORMAT_VERSION);
    return AG_OK;
}

typedef struct {
    nn_spec spec;
    size_t sizes[NN_MAX_LAYERS + 1];
    nn_act acts[NN_MAX_LAYERS];
    size_t n_params;
} header;

static ag_status bad_field(const reader *r, nn_error *err, const char *what, uint64_t v)
{
    return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: bad header field at byte %zu: %s "
                    "(%llu)", r->path, r->pos, what, (unsigned long long)v);
}

/* dtype, layer count, reserved word and slope. */
static ag_status read_scalars(reader *r, header *h, nn_error *err)
{
    uint64_t dtype, L, reserved, slope_bits;
    if (!r_int(r, &dtype, 4))
        return truncated(r, "dtype", err);
    if (dtype > 1)
        return bad_field(r, err, "dtype is not 0 (f32) or 1 (f64)", dtype);
    if (!r_int(r, &L, 4))
        return truncated(r, "layer count", err);
    if (L == 0 || L > NN_MAX_LAYERS)
        return bad_field(r, err, "layer count is not in 1..NN_MAX_LAYERS", L);
    if (!r_int(r, &reserved, 4))
        return truncated(r, "reserved field", err);
    if (reserved != 0)
        return bad_field(r, err, "reserved field is not 0", reserved);
    if (!r_int(r, &slope_bits, 8))
        return truncated(r, "leaky_relu slope", err);
    memcpy(&h->spec.leaky_slope, &slope_bits, 8);
    if (!isfinite(h->spec.leaky_slope))
        return bad_field(r, err, "leaky_relu slope is not finite", slope_bits);
    h->spec.dtype = dtype == 0 ? AG_F32 : AG_F64;
    h->spec.n_layers = (size_t)L;
    return AG_OK;
}

/* Widths, activations and the parameter count, checked against each other. */
static ag_status read_layers(reader *r, header *h, nn_error *err)
{
    size_t L = h->spec.n_layers;
    uint64_t v;
    for (size_t l = 0; l <= L; l++) {
        if (!r_int(r, &v, 8))
            return truncated(r, "layer sizes", err);
        if (v == 0 || v > SIZE_MAX)
            return bad_field(r, err, "a layer size is 0 or too large", v);
        h->sizes[l] = (size_t)v;
    }
    for (size_t l = 0; l < L; l++) {
        if (!r_int(r, &v, 4))
            return truncated(r, "activations", err);
        if (v > NN_IDENTITY)
            return bad_field(r, err, "an activation is not an nn_act", v);
        h->acts[l] = (nn_act)v;
    }
    if (!r_int(r, &v, 8))
        return truncated(r, "parameter count", err);
    size_t P = 0, w;
    for (size_t l = 0; l < L; l++) {
        if (!nn__mul(h->sizes[l], h->sizes[l + 1], &w) || w > SIZE_MAX - P - h->sizes[l + 1])
            return bad_field(r, err, "the parameter count overflows", v);
        P += w + h->sizes[l + 1];
    }
    if (v != P)
        return bad_field(r, err, "the parameter count disagrees with the layer sizes", v);
    h->n_params = P;
    h->spec.sizes = h->sizes;
    h->spec.acts = h->acts;
    return AG_OK;
}

/* The file must be exactly header + parameters + checksum long. */
static ag_status check_size(const reader *r, const header *h, nn_error *err)
{
    size_t payload, want;
    if (!nn__mul(h->n_params, ag_dtype_size(h->spec.dtype), &payload) ||
        payload > SIZE_MAX - r->pos - 4)
        return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: the parameter count %zu does not "
                        "fit in memory", r->path, h->n_params);
    want = r->pos + payload + 4;
    if (r->size < want)
        return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: truncated: %zu bytes, the header "
                        "describes %zu", r->path, r->size, want);
    if (r->size > want)
        return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: %zu trailing bytes after the "
                        "checksum", r->path, r->size - want);
    return AG_OK;
}

/* The parameters into net's block, then the checksum. */
static ag_status read_payload(reader *r, nn_mlp *net, nn_error *err)
{
    ag_dtype dt = nn_mlp_spec(net)->dtype;
    size_t P = nn_mlp_param_count(net), es = ag_dtype_size(dt);
    void *data = nn_mlp_data(net);
    unsigned char buf[4096]; /* a multiple of both element sizes */
    for (size_t i = 0; i < P;) {
        size_t k = (P - i) * es < sizeof buf ? (P - i) * es : sizeof buf;
        if (!r_bytes(r, buf, k))
            return truncated(r, "parameters", err);
        for (size_t j = 0; j < k; j += es, i++)
            set_elem_bits(dt, data, i, get_le(buf + j, es));
    }
    uint32_t computed = r->crc;
    uint64_t stored;
    if (!r_int(r, &stored, 4))
        return truncated(r, "checksum", err);
    if (stored != computed)
        return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: checksum mismatch (stored 0x%08x, "
                        "computed 0x%08x): the file is corrupted", r->path, (unsigned)stored,
                        (unsigned)computed);
    return AG_OK;
}

static ag_status load_from(reader *r, nn_mlp **out, nn_error *err)
{
    header h = {0};
    ag_status s = read_preamble(r, err);
    if (s == AG_OK)
        s = read_scalars(r, &h, err);
    if (s == AG_OK)
        s = read_layers(r, &h, err);
    if (s == AG_OK)
        s = check_size(r, &h, err);
    nn_mlp *net = NULL;
    if (s == AG_OK)
        s = nn_mlp_new(&h.spec, &net, err);
    if (s == AG_OK)
        s = read_payload(r, net, err);
    if (s != AG_OK) {
        nn_mlp_free(net);
        return s;
    }
    *out = net;
    return nn__ok(err);
}

ag_status nn_mlp_load(const char *path, nn_mlp **out, nn_error *err)
{
    const char *fn = "nn_mlp_load";
    if (!path || !out)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, path ? "out" : "path");
    *out = NULL;
    reader r = {.path = path};
    ag_status s = nn__open_sized(fn, path, &r.f, &r.size, err);
    if (s != AG_OK)
        return s;
    s = load_from(&r, out, err);
    fclose(r.f);
    return s;
}
