/* model_file.c: saving and loading a model in the format documented in nn.h.
 *
 * Saving writes a temporary file of a fresh name beside the destination
 * (created exclusively, so nothing planted there is opened or followed),
 * syncs it, renames it over the destination and syncs the directory: a
 * reader, or another saver, sees the old model or the new one, never a mix.
 *
 * Loading checks the header, the sizes against the file's size and the
 * checksum while streaming over the file, allocating nothing; only a file
 * that passes is read a second time into a fresh model (without drawing
 * initial values it would overwrite). */
#define _POSIX_C_SOURCE 200809L /* open, fstat, fsync, fdopen: C has no durable write */
#include "nn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#define FORMAT_VERSION 1u
#define PATH_MAX_LEN 4096
static const unsigned char MAGIC[8] = {0x89, 'N', 'N', 'M', '\r', '\n', 0x1a, '\n'};

_Static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE-754 binary32/64 floats");

/* CRC-32 by slicing-by-8 (eight bytes per step, one table per byte
 * position): the loader runs it twice over every parameter, so it has to
 * keep up with the disk. crc_tab[0][b] is the CRC of byte b (reflected
 * polynomial 0xEDB88320), crc_tab[k][b] that of byte b followed by k zero
 * bytes. Computed once, at the first call, and only read after; the tests
 * check nn_crc32 against a bit-by-bit CRC at every length and alignment. */
static uint32_t crc_tab[8][256];
static once_flag crc_once = ONCE_FLAG_INIT;

static void crc_init(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int bit = 0; bit < 8; bit++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc_tab[0][b] = c;
    }
    for (size_t k = 1; k < 8; k++)
        for (size_t b = 0; b < 256; b++)
            crc_tab[k][b] = (crc_tab[k - 1][b] >> 8) ^ crc_tab[0][crc_tab[k - 1][b] & 0xff];
}

uint32_t nn_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    if (!p)
        return crc;
    call_once(&crc_once, crc_init);
    crc = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        crc ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        crc = crc_tab[7][crc & 0xff] ^ crc_tab[6][(crc >> 8) & 0xff] ^
              crc_tab[5][(crc >> 16) & 0xff] ^ crc_tab[4][crc >> 24] ^ crc_tab[3][p[4]] ^
              crc_tab[2][p[5]] ^ crc_tab[1][p[6]] ^ crc_tab[0][p[7]];
    }
    for (; n > 0; p++, n--)
        crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p) & 0xff];
    return ~crc;
}

/* ---------------------------------------------------------------- save */

static void write_model(nn__writer *w, const nn_mlp *net)
{
    const nn_spec *s = nn_mlp_spec(net);
    uint64_t slope;
    memcpy(&slope, &s->leaky_slope, 8);
    nn__put_bytes(w, MAGIC, sizeof MAGIC);
    nn__put_int(w, FORMAT_VERSION, 4);
    nn__put_int(w, s->dtype == AG_F32 ? 0 : 1, 4);
    nn__put_int(w, s->n_layers, 4);
    nn__put_int(w, 0, 4); /* reserved */
    nn__put_int(w, slope, 8);
    for (size_t l = 0; l <= s->n_layers; l++)
        nn__put_int(w, s->sizes[l], 8);
    for (size_t l = 0; l < s->n_layers; l++)
        nn__put_int(w, (uint64_t)s->acts[l], 4);
    size_t P = nn_mlp_param_count(net), es = ag_dtype_size(s->dtype);
    nn__put_int(w, P, 8);
    nn__put_array(w, nn_mlp_data(net), P, es);
    uint32_t crc = w->crc;
    nn__put_int(w, crc, 4);
}

/* 64 bits no other save can be expected to draw: the time, the process, an
 * address on the calling thread's stack and the attempt, mixed (splitmix64). */
static uint64_t temp_suffix(unsigned attempt)
{
    struct timespec ts = {0};
    timespec_get(&ts, TIME_UTC);
    uint64_t parts[] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)getpid(),
                        (uint64_t)(uintptr_t)&ts, attempt};
    uint64_t h = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        h += parts[i] + 0x9e3779b97f4a7c15u;
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9u;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebu;
        h ^= h >> 31;
    }
    return h;
}

/* Creates "path.<16 hex digits>.tmp" exclusively (as mkstemp: a file or a
 * symlink already there is never opened, another name is tried), mode 0666
 * less the umask, as fopen would. Returns the descriptor or -1 with errno. */
static int create_temp(const char *path, char *tmp, size_t cap)
{
    int fd = -1;
    for (unsigned attempt = 0; fd < 0 && attempt < 100; attempt++) {
        snprintf(tmp, cap, "%s.%016llx.tmp", path, (unsigned long long)temp_suffix(attempt));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    return fd;
}

/* Fills the open temporary file through write, flushed and synced to the
 * disk; closes fd. Returns 0 or the errno of the first failure. */
static int write_synced(int fd, nn__file_writer *write, const void *ctx)
{
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        int e = errno;
        close(fd);
        return e;
    }
    int e = write(f, ctx);
    if (!e && fflush(f) != 0)
        e = errno;
    if (!e && fsync(fileno(f)) != 0)
        e = errno;
    if (fclose(f) != 0 && !e)
        e = errno;
    return e;
}

/* Makes the rename durable: fsync of path's directory. A directory that
 * cannot be opened (no read permission) or synced (EINVAL: the file system
 * does not sync directories) is left as the rename made it. */
static int sync_dir(const char *path)
{
    char dir[PATH_MAX_LEN + 1];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x" lives in "/" */
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int e = fsync(fd) != 0 && errno != EINVAL ? errno : 0;
    close(fd);
    return e;
}

ag_status nn__save_atomic(const char *fn, const char *path, nn__file_writer *write,
                          const void *ctx, nn_error *err)
{
    size_t len = strlen(path);
    if (len == 0 || len > PATH_MAX_LEN)
        return nn__fail(err, AG_ERR_VALUE, "%s: path is empty or longer than %d bytes", fn,
                        PATH_MAX_LEN);
    char tmp[PATH_MAX_LEN + 32];
    int fd = create_temp(path, tmp, sizeof tmp);
    if (fd < 0)
        return nn__fail(err, AG_ERR_IO, "%s: cannot create '%s' (the temporary file for '%s'): "
                        "%s", fn, tmp, path, strerror(errno));
    int e = write_synced(fd, write, ctx);
    if (e) {
        unlink(tmp);
        return nn__fail(err, AG_ERR_IO, "%s: cannot write '%s' (the temporary file for '%s'): "
                        "%s", fn, tmp, path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return nn__fail(err, AG_ERR_IO, "%s: cannot rename '%s' to '%s': %s", fn, tmp, path,
                        strerror(e));
    }
    e = sync_dir(path);
    if (e)
        return nn__fail(err, AG_ERR_IO, "%s: '%s' is written, but syncing its directory failed: "
                        "%s", fn, path, strerror(e));
    return nn__ok(err);
}

static int write_model_file(FILE *f, const void *net)
{
    nn__writer w = {.f = f};
    write_model(&w, net);
    return w.err;
}

ag_status nn_mlp_save(const nn_mlp *net, const char *path, nn_error *err)
{
    if (!net || !path)
        return nn__fail(err, AG_ERR_NULL, "nn_mlp_save: %s is NULL", net ? "path" : "net");
    return nn__save_atomic("nn_mlp_save", path, write_model_file, net, err);
}

/* ---------------------------------------------------------------- load */

static ag_status truncated(const nn__reader *r, const char *field, nn_error *err)
{
    if (r->io_error)
        return nn__fail(err, AG_ERR_IO, "nn_mlp_load: %s: read error", r->path);
    return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: truncated: the file ends in the %s "
                    "(%zu bytes)", r->path, field, r->size);
}

/* The magic and the version, which say whether the rest can be read. */
static ag_status read_preamble(nn__reader *r, nn_error *err)
{
    unsigned char m[sizeof MAGIC];
    nn__get_bytes(r, m, sizeof m);
    size_t got = r->pos;
    if (memcmp(m, MAGIC, got) != 0)
        return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: not an nn model file (bad magic)",
                        r->path);
    if (got < sizeof m)
        return got == 0 && !ferror(r->f)
                   ? nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: truncated: the file is empty",
                              r->path)
                   : truncated(r, "magic", err);
    uint64_t version;
    if (!nn__get_int(r, &version, 4))
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
    size_t end;       /* bytes of the header: the parameters start here */
    uint32_t crc;     /* of the header */
} header;

/* The field of n bytes just read is bad: the message names its first byte. */
static ag_status bad_field(const nn__reader *r, size_t n, nn_error *err, const char *what, uint64_t v)
{
    return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: bad header field at byte %zu: %s "
                    "(%llu)", r->path, r->pos - n, what, (unsigned long long)v);
}

/* dtype, layer count, reserved word and slope. */
static ag_status read_scalars(nn__reader *r, header *h, nn_error *err)
{
    uint64_t dtype, L, reserved, slope_bits;
    if (!nn__get_int(r, &dtype, 4))
        return truncated(r, "dtype", err);
    if (dtype > 1)
        return bad_field(r, 4, err, "dtype is not 0 (f32) or 1 (f64)", dtype);
    if (!nn__get_int(r, &L, 4))
        return truncated(r, "layer count", err);
    if (L == 0 || L > NN_MAX_LAYERS)
        return bad_field(r, 4, err, "layer count is not in 1..NN_MAX_LAYERS", L);
    if (!nn__get_int(r, &reserved, 4))
        return truncated(r, "reserved field", err);
    if (reserved != 0)
        return bad_field(r, 4, err, "reserved field is not 0", reserved);
    if (!nn__get_int(r, &slope_bits, 8))
        return truncated(r, "leaky_relu slope", err);
    memcpy(&h->spec.leaky_slope, &slope_bits, 8);
    if (!isfinite(h->spec.leaky_slope))
        return bad_field(r, 8, err, "leaky_relu slope is not finite", slope_bits);
    h->spec.dtype = dtype == 0 ? AG_F32 : AG_F64;
    h->spec.n_layers = (size_t)L;
    return AG_OK;
}

/* Widths, activations and the parameter count, checked against each other. */
static ag_status read_layers(nn__reader *r, header *h, nn_error *err)
{
    size_t L = h->spec.n_layers;
    uint64_t v;
    for (size_t l = 0; l <= L; l++) {
        if (!nn__get_int(r, &v, 8))
            return truncated(r, "layer sizes", err);
        if (v == 0 || v > SIZE_MAX)
            return bad_field(r, 8, err, "a layer size is 0 or too large", v);
        h->sizes[l] = (size_t)v;
    }
    for (size_t l = 0; l < L; l++) {
        if (!nn__get_int(r, &v, 4))
            return truncated(r, "activations", err);
        if (v >= NN_ACT_COUNT)
            return bad_field(r, 4, err, "an activation is not an nn_act", v);
        h->acts[l] = (nn_act)v;
    }
    if (!nn__get_int(r, &v, 8))
        return truncated(r, "parameter count", err);
    size_t P = 0, w;
    for (size_t l = 0; l < L; l++) {
        if (!nn__mul(h->sizes[l], h->sizes[l + 1], &w) || w > SIZE_MAX - P - h->sizes[l + 1])
            return bad_field(r, 8, err, "the parameter count overflows", v);
        P += w + h->sizes[l + 1];
    }
    if (v != P)
        return bad_field(r, 8, err, "the parameter count disagrees with the layer sizes", v);
    h->n_params = P;
    h->spec.sizes = h->sizes;
    h->spec.acts = h->acts;
    h->end = r->pos;
    h->crc = r->crc;
    return AG_OK;
}

/* The file must be exactly header + parameters + checksum long. */
static ag_status check_size(const nn__reader *r, const header *h, nn_error *err)
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

/* Reads the parameters: through the CRC only (data NULL), or also into a
 * model's block, straight from the file on a little-endian host. */
static ag_status read_params(nn__reader *r, const header *h, void *data, nn_error *err)
{
    size_t es = ag_dtype_size(h->spec.dtype), n = h->n_params; /* check_size: no overflow */
    unsigned char buf[16384];
    for (size_t done = 0, per = sizeof buf / es; done < n;) {
        size_t k = n - done < per ? n - done : per;
        if (!nn__get_array(r, data ? (unsigned char *)data + done * es : buf, k, es))
            return truncated(r, "parameters", err);
        done += k;
    }
    return AG_OK;
}

/* The stored checksum against the CRC of every byte read so far. */
static ag_status check_crc(nn__reader *r, nn_error *err)
{
    uint32_t computed = r->crc;
    uint64_t stored;
    if (!nn__get_int(r, &stored, 4))
        return truncated(r, "checksum", err);
    if (stored != computed)
        return nn__fail(err, AG_ERR_FORMAT, "nn_mlp_load: %s: checksum mismatch (stored 0x%08x, "
                        "computed 0x%08x): the file is corrupted", r->path, (unsigned)stored,
                        (unsigned)computed);
    return AG_OK;
}

/* The second pass, into a model of zeros: the bytes are checked once more,
 * as the file may have been rewritten in place since the first. */
static ag_status read_model(nn__reader *r, const header *h, nn_mlp **out, nn_error *err)
{
    if (fseek(r->f, (long)h->end, SEEK_SET) != 0)
        return nn__fail(err, AG_ERR_IO, "nn_mlp_load: %s: cannot seek: %s", r->path,
                        strerror(errno));
    r->pos = h->end;
    r->crc = h->crc;
    nn_mlp *net = NULL;
    ag_status s = nn__mlp_new_zeroed(&h->spec, "nn_mlp_load", &net, err);
    if (s == AG_OK)
        s = read_params(r, h, nn_mlp_data(net), err);
    if (s == AG_OK && check_crc(r, err) != AG_OK)
        s = nn__fail(err, AG_ERR_IO, "nn_mlp_load: %s: the file changed while it was read",
                     r->path);
    if (s != AG_OK) {
        nn_mlp_free(net);
        return s;
    }
    *out = net;
    return AG_OK;
}

static ag_status load_from(nn__reader *r, nn_mlp **out, nn_error *err)
{
    header h = {0};
    ag_status s = read_preamble(r, err);
    if (s == AG_OK)
        s = read_scalars(r, &h, err);
    if (s == AG_OK)
        s = read_layers(r, &h, err);
    if (s == AG_OK)
        s = check_size(r, &h, err);
    if (s == AG_OK)
        s = read_params(r, &h, NULL, err);
    if (s == AG_OK)
        s = check_crc(r, err);
    if (s == AG_OK)
        s = read_model(r, &h, out, err);
    return s == AG_OK ? nn__ok(err) : s;
}

/* Opens path if it is a regular file (a FIFO or device is refused at once). */
static ag_status open_model(nn__reader *r, nn_error *err)
{
    return nn__open_sized("nn_mlp_load", r->path, &r->f, &r->size, err);
}

ag_status nn_mlp_load(const char *path, nn_mlp **out, nn_error *err)
{
    const char *fn = "nn_mlp_load";
    if (!path || !out)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, path ? "out" : "path");
    *out = NULL;
    nn__reader r = {.path = path};
    ag_status s = open_model(&r, err);
    if (s != AG_OK)
        return s;
    s = load_from(&r, out, err);
    fclose(r.f);
    return s;
}
