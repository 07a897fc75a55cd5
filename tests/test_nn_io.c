/* test_nn_io.c: the model file: exact round trips, the documented layout,
 * and rejection of truncated, corrupted and foreign files. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn.h"
#include "testalloc.h"

/* A fresh temporary path (the file exists, empty). */
static void temp_path(char path[64])
{
    strcpy(path, "/tmp/nn_test_io_XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
}

static void write_bytes(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* The whole file into a malloc'd buffer. */
static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    unsigned char *b = malloc(1 << 20);
    *n = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

/* CRC-32 bit by bit, written here from the definition (reflected
 * polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF). */
static uint32_t crc32_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

static uint64_t le(const unsigned char *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static void put_le32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

/* Rewrites the trailing checksum so a deliberate header edit reaches the
 * field checks instead of the checksum check. */
static void fix_crc(unsigned char *b, size_t n)
{
    put_le32(b + n - 4, crc32_ref(b, n - 4));
}

static nn_mlp *sample_model(ag_dtype dt)
{
    size_t sizes[] = {3, 5, 4, 2};
    nn_act acts[] = {NN_LEAKY_RELU, NN_TANH, NN_IDENTITY};
    nn_spec spec = {.n_layers = 3, .sizes = sizes, .acts = acts, .dtype = dt,
                    .init = NN_INIT_XAVIER, .seed = 8, .leaky_slope = 0.125};
    nn_mlp *net;
    nn_error e;
    cr_assert_eq(nn_mlp_new(&spec, &net, &e), AG_OK, "%s", e.msg);
    return net;
}

/* Saves a sample model; returns its bytes and leaves the file at path. */
static unsigned char *saved(ag_dtype dt, char path[64], size_t *n)
{
    nn_mlp *net = sample_model(dt);
    temp_path(path);
    nn_error e;
    cr_assert_eq(nn_mlp_save(net, path, &e), AG_OK, "%s", e.msg);
    nn_mlp_free(net);
    return read_bytes(path, n);
}

/* Files in dir whose name starts with prefix (temporaries left behind). */
static size_t count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* The temporaries a save of /tmp/NAME could leave: /tmp/NAME.* */
static size_t temporaries_of(const char *path)
{
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%s.", strrchr(path, '/') + 1);
    return count_prefixed("/tmp", prefix);
}

/* Loads path expecting failure with status s and msg in the message; the
 * output stays NULL and nothing leaks. */
static void expect_rejected(const char *path, ag_status s, const char *msg, const char *what)
{
    test_alloc a;
    test_alloc_install(&a, 0);
    nn_mlp *net = (nn_mlp *)&net;
    nn_error e;
    cr_expect_eq(nn_mlp_load(path, &net, &e), s, "%s: %s", what, e.msg);
    cr_expect_null(net, "%s: no half-filled model", what);
    if (msg && strncmp(msg, "nn_", 3) == 0)
        cr_expect_str_eq(e.msg, msg, "%s", what);
    else if (msg)
        cr_expect(strstr(e.msg, msg), "%s: '%s' lacks '%s'", what, e.msg, msg);
    test_alloc_remove();
    cr_expect_eq(a.live_bytes, 0, "%s: leak", what);
}

Test(nn_io, crc32_check_value)
{
    cr_expect_eq(nn_crc32(0, "123456789", 9), 0xCBF43926u);
    cr_expect_eq(nn_crc32(nn_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u, "continues");
    cr_expect_eq(nn_crc32(0, NULL, 0), 0);
}

/* The eight-bytes-at-a-time loop and its byte tail agree with the
 * definition at every length, start alignment and split point. */
Test(nn_io, crc32_matches_the_bitwise_definition_everywhere)
{
    unsigned char buf[200];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 151 + 7);
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; off + n <= sizeof buf; n++) {
            uint32_t want = crc32_ref(buf + off, n);
            cr_assert_eq(nn_crc32(0, buf + off, n), want, "offset %zu, %zu bytes", off, n);
            size_t cut = n / 3;
            cr_assert_eq(nn_crc32(nn_crc32(0, buf + off, cut), buf + off + cut, n - cut), want,
                         "offset %zu, %zu bytes split at %zu", off, n, cut);
        }
}

Test(nn_io, round_trip_is_exact_to_the_bit)
{
    ag_dtype dts[] = {AG_F32, AG_F64};
    for (size_t k = 0; k < 2; k++) {
        nn_mlp *net = sample_model(dts[k]), *back = NULL;
        char path[64];
        temp_path(path);
        /* values a text format would lose: subnormal, -0, NaN payload, huge */
        if (dts[k] == AG_F64) {
            double *d = nn_mlp_data(net);
            d[0] = 5e-324;
            d[1] = -0.0;
            d[2] = 1.7976931348623157e308;
            uint64_t nan_bits = 0x7ff8000000012345u;
            memcpy(&d[3], &nan_bits, 8);
        } else {
            float *d = nn_mlp_data(net);
            d[0] = 1e-45f;
            d[1] = -0.0f;
        }
        nn_error e;
        cr_assert_eq(nn_mlp_save(net, path, &e), AG_OK, "%s", e.msg);
        cr_assert_eq(nn_mlp_load(path, &back, &e), AG_OK, "%s", e.msg);
        const nn_spec *a = nn_mlp_spec(net), *b = nn_mlp_spec(back);
        cr_expect_eq(b->n_layers, a->n_layers);
        cr_expect_eq(b->dtype, a->dtype);
        cr_expect_eq(b->leaky_slope, 0.125);
        for (size_t l = 0; l <= a->n_layers; l++)
            cr_expect_eq(b->sizes[l], a->sizes[l]);
        for (size_t l = 0; l < a->n_layers; l++)
            cr_expect_eq(b->acts[l], a->acts[l]);
        cr_assert_eq(nn_mlp_param_count(back), nn_mlp_param_count(net));
        cr_expect_eq(memcmp(nn_mlp_data(net), nn_mlp_data(back),
                            nn_mlp_param_count(net) * ag_dtype_size(dts[k])), 0);
        nn_mlp_free(back);
        nn_mlp_free(net);
        remove(path);
    }
}

Test(nn_io, loaded_model_computes_the_same_outputs)
{
    nn_mlp *net = sample_model(AG_F32), *back;
    char path[64];
    temp_path(path);
    cr_assert_eq(nn_mlp_save(net, path, NULL), AG_OK);
    cr_assert_eq(nn_mlp_load(path, &back, NULL), AG_OK);
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tensor *x = ag_rand_normal(AG_F32, AG_SHAPE(6, 3), 0, 1, &rng);
    ag_tape *t = ag_tape_new();
    ag_tensor *y1 = nn_mlp_forward(net, t, x, NULL, 0), *y2 = nn_mlp_forward(back, t, x, NULL, 0);
    cr_assert(y1 && y2, "%s", ag_tape_error(t));
    cr_expect_eq(memcmp(ag_data(y1), ag_data(y2), 12 * sizeof(float)), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    nn_mlp_free(net);
    nn_mlp_free(back);
    remove(path);
}

/* The bytes are those nn.h documents, read here field by field. */
Test(nn_io, file_layout_matches_the_documentation)
{
    char path[64];
    size_t n;
    unsigned char *b = saved(AG_F64, path, &n);
    const unsigned char magic[8] = {0x89, 'N', 'N', 'M', 0x0D, 0x0A, 0x1A, 0x0A};
    size_t L = 3, P = 3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2;
    cr_assert_eq(n, 48 + 12 * L + P * 8 + 4);
    cr_expect_eq(memcmp(b, magic, 8), 0);
    cr_expect_eq(le(b + 8, 4), 1, "version");
    cr_expect_eq(le(b + 12, 4), 1, "dtype f64");
    cr_expect_eq(le(b + 16, 4), L);
    cr_expect_eq(le(b + 20, 4), 0, "reserved");
    double slope;
    uint64_t bits = le(b + 24, 8);
    memcpy(&slope, &bits, 8);
    cr_expect_eq(slope, 0.125);
    size_t sizes[] = {3, 5, 4, 2};
    for (size_t l = 0; l <= L; l++)
        cr_expect_eq(le(b + 32 + 8 * l, 8), sizes[l]);
    uint32_t acts[] = {NN_LEAKY_RELU, NN_TANH, NN_IDENTITY};
    for (size_t l = 0; l < L; l++)
        cr_expect_eq(le(b + 40 + 8 * L + 4 * l, 4), acts[l]);
    cr_expect_eq(le(b + 40 + 12 * L, 8), P);
    nn_mlp *net = sample_model(AG_F64); /* same seed: the same parameters */
    const double *d = nn_mlp_data(net);
    for (size_t i = 0; i < P; i++) {
        uint64_t want;
        memcpy(&want, &d[i], 8);
        cr_expect_eq(le(b + 48 + 12 * L + 8 * i, 8), want, "parameter %zu", i);
    }
    cr_expect_eq(le(b + n - 4, 4), crc32_ref(b, n - 4), "CRC-32 of every byte before it");
    cr_expect_eq(temporaries_of(path), 0, "no temporary file left behind");
    nn_mlp_free(net);
    free(b);
    remove(path);
}

Test(nn_io, truncation_at_every_offset_is_rejected)
{
    char path[64], cut[64];
    size_t n;
    unsigned char *b = saved(AG_F32, path, &n);
    temp_path(cut);
    for (size_t k = 0; k < n; k++) {
        write_bytes(cut, b, k);
        char what[32];
        snprintf(what, sizeof what, "cut at %zu", k);
        expect_rejected(cut, AG_ERR_FORMAT, "truncated", what);
    }
    free(b);
    remove(path);
    remove(cut);
}

Test(nn_io, every_flipped_byte_is_rejected)
{
    char path[64], bad[64];
    size_t n;
    unsigned char *b = saved(AG_F32, path, &n);
    temp_path(bad);
    for (size_t k = 0; k < n; k++) {
        for (unsigned bit = 0; bit < 8; bit += 7) { /* the lowest and the highest bit */
            b[k] ^= (unsigned char)(1u << bit);
            write_bytes(bad, b, n);
            char what[48];
            snprintf(what, sizeof what, "bit %u of byte %zu flipped", bit, k);
            expect_rejected(bad, AG_ERR_FORMAT, NULL, what);
            b[k] ^= (unsigned char)(1u << bit);
        }
    }
    b[n - 10] ^= 0x10; /* inside the parameters: only the checksum can tell */
    write_bytes(bad, b, n);
    expect_rejected(bad, AG_ERR_FORMAT, "checksum mismatch", "payload flip");
    free(b);
    remove(path);
    remove(bad);
}

Test(nn_io, wrong_magic_version_and_fields)
{
    char path[64], bad[64];
    size_t n;
    unsigned char *b = saved(AG_F64, path, &n), *c = malloc(n + 8);
    temp_path(bad);
    /* Field errors name the field's first byte (L = 3: sizes at 32..63,
     * activations at 64..75, the parameter count at 76). */
    struct { size_t off; uint32_t v; const char *msg; } edits[] = {
        {8, 2, "unsupported version 2 (this library reads version 1)"},
        {12, 7, "bad header field at byte 12: dtype is not 0 (f32) or 1 (f64) (7)"},
        {16, 0, "bad header field at byte 16: layer count is not in 1..NN_MAX_LAYERS (0)"},
        {16, NN_MAX_LAYERS + 1, "bad header field at byte 16: layer count is not in "
                                "1..NN_MAX_LAYERS (65)"},
        {20, 1, "bad header field at byte 20: reserved field is not 0 (1)"},
        {32 + 8, 0, "bad header field at byte 40: a layer size is 0 or too large (0)"},
        {32 + 24, 0, "bad header field at byte 56: a layer size is 0 or too large (0)"},
        {40 + 8 * 3, 9, "bad header field at byte 64: an activation is not an nn_act (9)"},
        {40 + 8 * 3 + 8, 8, "bad header field at byte 72: an activation is not an nn_act (8)"},
        {40 + 12 * 3, 1000, "bad header field at byte 76: the parameter count disagrees with "
                            "the layer sizes (1000)"},
        {32 + 16, 6, "truncated: "},  /* a wider layer than the file holds */
        {32 + 16, 3, "trailing bytes"}, /* a narrower one */
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        memcpy(c, b, n);
        put_le32(c + edits[i].off, edits[i].v);
        if (edits[i].off == 32 + 16) /* keep P consistent with the new size */
            put_le32(c + 40 + 12 * 3, (uint32_t)(3 * 5 + 5 + 5 * edits[i].v + edits[i].v +
                                                 edits[i].v * 2 + 2));
        fix_crc(c, n);
        write_bytes(bad, c, n);
        char what[32];
        snprintf(what, sizeof what, "edit %zu", i);
        char full[256];
        snprintf(full, sizeof full, "nn_mlp_load: %s: %s", bad, edits[i].msg);
        expect_rejected(bad, AG_ERR_FORMAT, strchr(edits[i].msg, '(') ? full : edits[i].msg, what);
    }
    /* sizes whose product overflows: named at the parameter count */
    memcpy(c, b, n);
    for (int i = 0; i < 8; i++)
        c[32 + 8 + i] = c[32 + 16 + i] = 0xff;
    fix_crc(c, n);
    write_bytes(bad, c, n);
    expect_rejected(bad, AG_ERR_FORMAT, "bad header field at byte 76: the parameter count "
                    "overflows (54)", "overflow");
    memcpy(c, b, n);
    c[0] = 'X';
    write_bytes(bad, c, n);
    expect_rejected(bad, AG_ERR_FORMAT, "not an nn model file (bad magic)", "magic");
    memcpy(c, b, n);
    uint64_t inf = 0x7ff0000000000000u;
    for (int i = 0; i < 8; i++)
        c[24 + i] = (unsigned char)(inf >> (8 * i));
    fix_crc(c, n);
    write_bytes(bad, c, n);
    expect_rejected(bad, AG_ERR_FORMAT, "bad header field at byte 24: leaky_relu slope is not "
                    "finite (9218868437227405312)", "slope");
    memcpy(c, b, n);
    memset(c + n, 0, 8);
    write_bytes(bad, c, n + 8);
    expect_rejected(bad, AG_ERR_FORMAT, "8 trailing bytes after the checksum", "trailing");
    free(b);
    free(c);
    remove(path);
    remove(bad);
}

Test(nn_io, foreign_and_missing_files)
{
    expect_rejected(PROJECT_DATA_DIR "/digits.csv", AG_ERR_FORMAT, "bad magic", "csv");
    expect_rejected(PROJECT_DATA_DIR "/README.md", AG_ERR_FORMAT, "bad magic", "markdown");
    char path[64];
    temp_path(path);
    expect_rejected(path, AG_ERR_FORMAT, "truncated: the file is empty", "empty");
    write_bytes(path, (const unsigned char *)"\x89NN", 3);
    expect_rejected(path, AG_ERR_FORMAT, "truncated: the file ends in the magic", "short");
    write_bytes(path, (const unsigned char *)"\x89PNG\r\n\x1a\n", 8);
    expect_rejected(path, AG_ERR_FORMAT, "bad magic", "png");
    remove(path);
    expect_rejected("/nonexistent/model.nn", AG_ERR_IO, "cannot open '/nonexistent/model.nn'", "missing");
    expect_rejected("/tmp", AG_ERR_IO, "nn_mlp_load: '/tmp' is a directory, not a regular file",
                    "directory");
    nn_mlp *net;
    nn_error e;
    cr_expect_eq(nn_mlp_load(NULL, &net, &e), AG_ERR_NULL);
    cr_expect_eq(nn_mlp_load(path, NULL, &e), AG_ERR_NULL);
}

Test(nn_io, save_errors)
{
    nn_mlp *net = sample_model(AG_F32);
    nn_error e;
    cr_expect_eq(nn_mlp_save(net, "/nonexistent/dir/model.nn", &e), AG_ERR_IO);
    cr_expect(strncmp(e.msg, "nn_mlp_save: cannot create '/nonexistent/dir/model.nn.", 53) == 0,
              "%s", e.msg);
    cr_expect(strstr(e.msg, ".tmp' (the temporary file for '/nonexistent/dir/model.nn'): "
                            "No such file or directory"), "%s", e.msg);
    cr_expect_eq(nn_mlp_save(NULL, "/tmp/x", &e), AG_ERR_NULL);
    cr_expect_eq(nn_mlp_save(net, NULL, &e), AG_ERR_NULL);
    cr_expect_eq(nn_mlp_save(net, "", &e), AG_ERR_VALUE);
    char *long_path = malloc(5000);
    memset(long_path, 'a', 4999);
    long_path[4999] = '\0';
    cr_expect_eq(nn_mlp_save(net, long_path, &e), AG_ERR_VALUE);
    free(long_path);
    nn_mlp_free(net);
}

Test(nn_io, load_allocation_failures_are_clean)
{
    char path[64];
    size_t n, k;
    free(saved(AG_F64, path, &n));
    for (k = 1; k < 100; k++) {
        test_alloc a;
        test_alloc_install(&a, k);
        nn_mlp *net = NULL;
        nn_error e;
        ag_status s = nn_mlp_load(path, &net, &e);
        bool failed = a.failed;
        nn_mlp_free(net);
        test_alloc_remove();
        cr_expect_eq(a.live_bytes, 0, "leak failing allocation %zu", k);
        if (!failed) {
            cr_expect_eq(s, AG_OK, "%s", e.msg);
            break;
        }
        cr_expect_eq(s, AG_ERR_NOMEM, "%zu: %s", k, e.msg);
        cr_expect_null(net);
    }
    cr_expect_gt(k, 1);
    cr_expect_lt(k, 100);
    remove(path);
}

/* A fresh directory for files a test makes beside each other. */
static void temp_dir(char dir[64])
{
    strcpy(dir, "/tmp/nn_test_dir_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static bool same_params(const nn_mlp *a, const nn_mlp *b)
{
    size_t P = nn_mlp_param_count(a), es = ag_dtype_size(nn_mlp_spec(a)->dtype);
    return P == nn_mlp_param_count(b) && nn_mlp_spec(a)->dtype == nn_mlp_spec(b)->dtype &&
           memcmp(nn_mlp_data(a), nn_mlp_data(b), P * es) == 0;
}

/* Two processes save different models to one path over and over while this
 * one loads it: every load must succeed and give one of the two models
 * (with a fixed temporary name, a third of the saves failed and half the
 * loads saw a truncated file or a bad checksum). */
Test(nn_io, overlapping_saves_and_loads_always_see_a_whole_model, .timeout = 120)
{
    enum { SAVES = 150 };
    char dir[64], path[96];
    temp_dir(dir);
    snprintf(path, sizeof path, "%s/model.nnm", dir);
    nn_mlp *m[2] = {sample_model(AG_F32), sample_model(AG_F32)};
    cr_assert_eq(nn_mlp_init(m[1], NN_INIT_HE, 99, NULL), AG_OK);
    cr_assert(!same_params(m[0], m[1]));
    nn_error e;
    cr_assert_eq(nn_mlp_save(m[0], path, &e), AG_OK, "%s", e.msg);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        cr_assert_geq(kids[k], 0);
        if (kids[k] == 0) { /* a writer: exit status 1 if any save failed */
            int failed = 0;
            for (int i = 0; i < SAVES; i++)
                if (nn_mlp_save(m[k], path, &e) != AG_OK && failed++ == 0)
                    fprintf(stderr, "writer %d, save %d: %s\n", k, i, e.msg);
            _exit(failed != 0);
        }
    }
    size_t loads = 0, seen[2] = {0, 0}, running = 2;
    int status[2] = {-1, -1};
    while (running > 0 || loads < 100) {
        nn_mlp *back = NULL;
        cr_assert_eq(nn_mlp_load(path, &back, &e), AG_OK, "load %zu: %s", loads, e.msg);
        bool a = same_params(back, m[0]), b = same_params(back, m[1]);
        cr_assert(a || b, "load %zu gave neither of the saved models", loads);
        seen[b]++;
        loads++;
        nn_mlp_free(back);
        for (int k = 0; k < 2; k++) {
            int st;
            if (status[k] == -1 && waitpid(kids[k], &st, WNOHANG) == kids[k]) {
                status[k] = st;
                running--;
            }
        }
    }
    for (int k = 0; k < 2; k++) {
        cr_expect(WIFEXITED(status[k]) && WEXITSTATUS(status[k]) == 0,
                  "writer %d: a save failed (status 0x%x)", k, status[k]);
    }
    cr_log_info("%zu loads while %d saves ran: %zu of model A, %zu of model B", loads, 2 * SAVES,
                seen[0], seen[1]);
    cr_expect_eq(count_prefixed(dir, "model.nnm."), 0, "no temporary file left behind");
    nn_mlp_free(m[0]);
    nn_mlp_free(m[1]);
    remove(path);
    rmdir(dir);
}

/* The old fixed temporary name "PATH.tmp" followed a symlink planted there
 * and overwrote its target. Now nothing at a predictable name is opened. */
Test(nn_io, a_symlink_planted_at_the_old_temporary_name_is_not_followed)
{
    char dir[64], path[96], link[100], victim[96];
    temp_dir(dir);
    snprintf(path, sizeof path, "%s/model.nnm", dir);
    snprintf(link, sizeof link, "%s.tmp", path);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    write_bytes(victim, (const unsigned char *)"precious", 8);
    cr_assert_eq(symlink(victim, link), 0, "%s", strerror(errno));
    nn_mlp *net = sample_model(AG_F64), *back = NULL;
    nn_error e;
    cr_assert_eq(nn_mlp_save(net, path, &e), AG_OK, "%s", e.msg);
    size_t n;
    unsigned char *b = read_bytes(victim, &n);
    cr_expect(n == 8 && memcmp(b, "precious", 8) == 0, "the symlink's target was overwritten");
    free(b);
    struct stat st;
    cr_expect(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the planted symlink is left alone");
    cr_assert_eq(nn_mlp_load(path, &back, &e), AG_OK, "%s", e.msg);
    cr_expect(same_params(net, back));
    cr_expect_eq(count_prefixed(dir, "model.nnm."), 1, "only the planted link");
    nn_mlp_free(net);
    nn_mlp_free(back);
    remove(link);
    remove(victim);
    remove(path);
    rmdir(dir);
}

/* A write that fails (here: the file size limit) names the file and the
 * reason, removes the temporary file and leaves the old model in place. */
Test(nn_io, a_failed_write_says_why_and_keeps_the_previous_file)
{
    char dir[64], path[96];
    temp_dir(dir);
    snprintf(path, sizeof path, "%s/model.nnm", dir);
    nn_mlp *old = sample_model(AG_F32), *big, *back = NULL;
    size_t sizes[] = {64, 64, 10};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .dtype = AG_F64, .seed = 3};
    cr_assert_eq(nn_mlp_new(&spec, &big, NULL), AG_OK);
    nn_error e;
    cr_assert_eq(nn_mlp_save(old, path, &e), AG_OK, "%s", e.msg);
    struct rlimit was, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
    lim = was;
    lim.rlim_cur = 1000; /* the big model needs 36 kB */
    signal(SIGXFSZ, SIG_IGN); /* so the write fails with EFBIG instead of killing us */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    ag_status s = nn_mlp_save(big, path, &e);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
    cr_expect_eq(s, AG_ERR_IO, "%s", e.msg);
    char want[200];
    snprintf(want, sizeof want, "nn_mlp_save: cannot write '%s.", path);
    cr_expect(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
    snprintf(want, sizeof want, ".tmp' (the temporary file for '%s'): %s", path, strerror(EFBIG));
    cr_expect(strstr(e.msg, want), "'%s' lacks '%s'", e.msg, want);
    cr_expect_eq(count_prefixed(dir, "model.nnm."), 0, "the temporary file is removed");
    cr_assert_eq(nn_mlp_load(path, &back, &e), AG_OK, "%s", e.msg);
    cr_expect(same_params(old, back), "the previous model is still there");
    nn_mlp_free(old);
    nn_mlp_free(big);
    nn_mlp_free(back);
    remove(path);
    rmdir(dir);
}

/* A FIFO would block a plain open until a writer came; devices and
 * directories are no model files either. */
Test(nn_io, files_that_are_not_regular_are_refused_at_once, .timeout = 10)
{
    char dir[64], fifo[96], msg[160];
    temp_dir(dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0, "%s", strerror(errno));
    snprintf(msg, sizeof msg, "nn_mlp_load: '%s' is a FIFO, not a regular file", fifo);
    expect_rejected(fifo, AG_ERR_IO, msg, "fifo");
    expect_rejected("/dev/zero", AG_ERR_IO,
                    "nn_mlp_load: '/dev/zero' is a character device, not a regular file", "zero");
    expect_rejected("/dev/null", AG_ERR_IO,
                    "nn_mlp_load: '/dev/null' is a character device, not a regular file", "null");
    snprintf(msg, sizeof msg, "nn_mlp_load: '%s' is a directory, not a regular file", dir);
    expect_rejected(dir, AG_ERR_IO, msg, "directory");
    remove(fifo);
    rmdir(dir);
}

/* The header, the sizes and the checksum are checked before the model is
 * allocated: a corrupted or lying file costs no memory. */
Test(nn_io, a_bad_file_is_rejected_before_anything_is_allocated)
{
    size_t sizes[] = {300, 200, 10};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .dtype = AG_F32, .seed = 4};
    nn_mlp *net;
    cr_assert_eq(nn_mlp_new(&spec, &net, NULL), AG_OK);
    char path[64], bad[64];
    temp_path(path);
    temp_path(bad);
    cr_assert_eq(nn_mlp_save(net, path, NULL), AG_OK);
    size_t n;
    unsigned char *b = read_bytes(path, &n);
    cr_assert_eq(n, 48 + 24 + 4 * (300 * 200 + 200 + 200 * 10 + 10) + 4);
    unsigned char *c = malloc(n);
    uint64_t huge = (uint64_t)1 << 40, P = huge * 200 + 200 + 200 * 10 + 10;
    for (size_t i = 0; i < 4; i++) {
        memcpy(c, b, n);
        const char *want = "checksum mismatch";
        if (i == 0) {
            c[n / 2] ^= 1; /* a parameter */
        } else if (i == 1) {
            c[n - 1] ^= 0x80; /* the checksum */
        } else if (i == 2) { /* a header that claims 2^40 inputs, consistently */
            for (int k = 0; k < 8; k++) {
                c[32 + k] = (unsigned char)(huge >> (8 * k));
                c[64 + k] = (unsigned char)(P >> (8 * k));
            }
            want = "truncated: ";
        } else {
            c[12] = 1; /* f64: twice the bytes the file holds */
            want = "truncated: ";
        }
        write_bytes(bad, c, n);
        test_alloc a;
        test_alloc_install(&a, 0);
        nn_mlp *back = NULL;
        nn_error e;
        ag_status s = nn_mlp_load(bad, &back, &e);
        test_alloc_remove();
        cr_expect_eq(s, AG_ERR_FORMAT, "case %zu: %s", i, e.msg);
        cr_expect(strstr(e.msg, want), "case %zu: '%s' lacks '%s'", i, e.msg, want);
        cr_expect_eq(a.attempts, 0, "case %zu: %zu allocations before the rejection", i,
                     a.attempts);
        cr_expect_null(back);
    }
    free(c);
    write_bytes(bad, b, n);
    test_alloc a;
    test_alloc_install(&a, 0);
    nn_mlp *back = NULL;
    cr_expect_eq(nn_mlp_load(bad, &back, NULL), AG_OK);
    test_alloc_remove();
    cr_expect_gt(a.attempts, 0, "a good file does allocate its model");
    cr_expect(back && same_params(net, back));
    nn_mlp_free(back);
    nn_mlp_free(net);
    free(b);
    remove(path);
    remove(bad);
}
