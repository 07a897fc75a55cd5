/* test_nn_interop.c: .npy and safetensors files, and the MLP's export to
 * PyTorch's nn.Sequential layout: round trips, the documented bytes
 * (written out by hand from NumPy's format spec and the safetensors
 * README), and every refusal, with nothing half-made or leaked. The
 * files of NumPy itself are checked by tests/interop/check_numpy.py. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "nn.h"
#include "testalloc.h"

/* ------------------------------------------------------------ helpers */

static void temp_path(char path[64])
{
    strcpy(path, "/tmp/nn_test_interop_XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* The whole file (at most 64 KiB) into buf; returns its length. */
static size_t read_bytes(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* A .npy v1.0 file: the header dict as given (padded to 64 with '\n'),
 * then data bytes. */
static size_t npy_file(unsigned char *out, const char *dict, const void *data, size_t n)
{
    size_t len = strlen(dict), hlen = len + 1;
    while ((10 + hlen) % 64)
        hlen++;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    out[8] = (unsigned char)(hlen & 0xff);
    out[9] = (unsigned char)(hlen >> 8);
    memcpy(out + 10, dict, len);
    memset(out + 10 + len, ' ', hlen - len - 1);
    out[10 + hlen - 1] = '\n';
    memcpy(out + 10 + hlen, data, n);
    return 10 + hlen + n;
}

static const double SIX[6] = {1.5, -2.25, 0.0, 1e300, -0.125, 3.0};

/* Loading the file bytes must fail with status s and phrase in the message. */
static void npy_refused(const void *bytes, size_t n, ag_status s, const char *phrase)
{
    char path[64];
    temp_path(path);
    write_bytes(path, bytes, n);
    ag_tensor *x = (ag_tensor *)path;
    nn_error err;
    cr_assert_eq(nn_npy_load(path, &x, &err), s, "%s", err.msg);
    cr_assert_eq(err.status, s);
    cr_assert_null(x);
    cr_assert(strstr(err.msg, "nn_npy_load") && strstr(err.msg, phrase), "message: %s", err.msg);
    unlink(path);
}

static void npy_dict_refused(const char *dict, const char *phrase)
{
    unsigned char b[512];
    npy_refused(b, npy_file(b, dict, SIX, 48), AG_ERR_FORMAT, phrase);
}

/* A safetensors file: the JSON header as given (not padded), then data. */
static size_t st_file(unsigned char *out, const char *json, const void *data, size_t n)
{
    size_t len = strlen(json);
    for (size_t i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)len >> (8 * i));
    memcpy(out + 8, json, len);
    memcpy(out + 8 + len, data, n);
    return 8 + len + n;
}

static void st_refused_bytes(const void *bytes, size_t n, ag_status s, const char *phrase)
{
    char path[64];
    temp_path(path);
    write_bytes(path, bytes, n);
    nn_safetensors *st = (nn_safetensors *)path;
    nn_error err;
    cr_assert_eq(nn_safetensors_load(path, &st, &err), s, "%s", err.msg);
    cr_assert_null(st);
    cr_assert(strstr(err.msg, "nn_safetensors_load") && strstr(err.msg, phrase),
              "message: %s", err.msg);
    unlink(path);
}

/* The header json over 48 bytes of data (six doubles) must be refused. */
static void st_refused(const char *json, const char *phrase)
{
    unsigned char b[4096];
    st_refused_bytes(b, st_file(b, json, SIX, 48), AG_ERR_FORMAT, phrase);
}

static nn_safetensors *st_load_json(const char *json, const void *data, size_t n)
{
    char path[64];
    unsigned char b[4096];
    temp_path(path);
    write_bytes(path, b, st_file(b, json, data, n));
    nn_safetensors *st = NULL;
    nn_error err;
    cr_assert_eq(nn_safetensors_load(path, &st, &err), AG_OK, "%s", err.msg);
    unlink(path);
    return st;
}

static bool same_bits(const ag_tensor *a, const ag_tensor *b)
{
    size_t n = ag_tensor_numel(a);
    return ag_tensor_dtype(a) == ag_tensor_dtype(b) && ag_tensor_rank(a) == ag_tensor_rank(b) &&
           memcmp(ag_tensor_shape(a), ag_tensor_shape(b), ag_tensor_rank(a) * sizeof(size_t)) == 0 &&
           n == ag_tensor_numel(b) &&
           (n == 0 || memcmp(ag_data(a), ag_data(b), n * ag_dtype_size(ag_tensor_dtype(a))) == 0);
}

/* ---------------------------------------------------------------- .npy */

Test(npy, round_trips_keep_every_bit_at_every_rank)
{
    const size_t shapes[][AG_MAX_RANK] = {{0}, {5}, {3, 4}, {2, 1, 3}, {1, 2, 1, 2, 1, 2, 1, 2}, {0, 3}};
    const size_t ranks[] = {0, 1, 2, 3, 8, 2};
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    char path[64];
    temp_path(path);
    for (int dt = 0; dt < 2; dt++)
        for (size_t k = 0; k < sizeof ranks / sizeof ranks[0]; k++) {
            ag_tensor *x = ag_rand_normal(dt ? AG_F64 : AG_F32, shapes[k], ranks[k], 0, 1, &rng);
            if (ag_tensor_numel(x) > 1) /* values that must survive exactly */
                memcpy(ag_data(x), dt ? (const void *)&(double){-0.0} : &(float){-0.0f},
                       ag_dtype_size(ag_tensor_dtype(x)));
            nn_error err;
            ag_tensor *y = NULL;
            cr_assert_eq(nn_npy_save(x, path, &err), AG_OK, "%s", err.msg);
            cr_assert_eq(nn_npy_load(path, &y, &err), AG_OK, "%s", err.msg);
            cr_assert_str_empty(err.msg);
            cr_assert(same_bits(x, y), "dtype %d rank %zu", dt, ranks[k]);
            ag_tensor_free(x);
            ag_tensor_free(y);
        }
    unlink(path);
}

Test(npy, writes_numpys_header_byte_for_byte)
{
    /* np.save(np.zeros((3, 4), np.float32)): the dict, 21 - len("3") spare
     * spaces, padding to 64 bytes with the preamble, '\n'. */
    char want[129] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, "
                     "'shape': (3, 4), }";
    size_t n = strlen(want + 10) + 10;
    memset(want + n, ' ', 127 - n);
    want[127] = '\n';
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(3, 4));
    ((float *)ag_data(x))[0] = 1.0f;
    char path[64];
    temp_path(path);
    cr_assert_eq(nn_npy_save(x, path, NULL), AG_OK);
    unsigned char got[256];
    cr_assert_eq(read_bytes(path, got, sizeof got), 128 + 48);
    cr_assert(memcmp(got, want, 128) == 0, "header: %.118s", got + 10);
    cr_assert(memcmp(got + 128, "\x00\x00\x80\x3f", 4) == 0); /* 1.0f little-endian */
    /* a scalar: shape (), no spare spaces; a vector: (5,) */
    ag_tensor *s = ag_scalar(AG_F64, 2.0);
    cr_assert_eq(nn_npy_save(s, path, NULL), AG_OK);
    cr_assert_eq(read_bytes(path, got, sizeof got), 128 + 8); /* 10 + 55 + 1 > 64 */
    cr_assert(memcmp(got + 10, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 55) == 0);
    ag_tensor *v = ag_zeros(AG_F64, AG_SHAPE(5));
    cr_assert_eq(nn_npy_save(v, path, NULL), AG_OK);
    read_bytes(path, got, sizeof got);
    cr_assert(memcmp(got + 10, "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }", 57) == 0);
    ag_tensor_free(x);
    ag_tensor_free(s);
    ag_tensor_free(v);
    unlink(path);
}

Test(npy, reads_other_byte_orders_and_versions)
{
    unsigned char b[512];
    char path[64];
    temp_path(path);
    /* '>f8': 1.5 big-endian */
    const unsigned char be[8] = {0x3f, 0xf8, 0, 0, 0, 0, 0, 0};
    const char *dicts[] = {"{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }",
                           "{\"shape\": (1,), 'descr': '=f8',\n 'fortran_order': False}",
                           "{'descr': '|f8', 'fortran_order': False, 'shape': (1, )}"};
    for (size_t k = 0; k < 3; k++) {
        double one_half = 1.5;
        write_bytes(path, b, npy_file(b, dicts[k], k ? (const void *)&one_half : be, 8));
        ag_tensor *x = NULL;
        nn_error err;
        cr_assert_eq(nn_npy_load(path, &x, &err), AG_OK, "%s: %s", dicts[k], err.msg);
        cr_assert_eq(ag_tensor_rank(x), 1);
        cr_assert_eq(ag_get(x, 0), 1.5, "%s", dicts[k]);
        ag_tensor_free(x);
    }
    /* version 2.0: a 4-byte header length */
    size_t n = npy_file(b + 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                        &(float){-3.0f}, 4);
    memcpy(b, "\x93NUMPY\x02\x00", 8);
    b[8] = b[10];
    b[9] = b[11];
    b[10] = b[11] = 0;
    write_bytes(path, b, n + 2);
    ag_tensor *x = NULL;
    nn_error err;
    cr_assert_eq(nn_npy_load(path, &x, &err), AG_OK, "%s", err.msg);
    cr_assert_eq(ag_tensor_rank(x), 0);
    cr_assert_eq(ag_item(x), -3.0);
    ag_tensor_free(x);
    unlink(path);
}

Test(npy, refuses_what_it_cannot_read_clearly)
{
    npy_dict_refused("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", "Fortran order");
    npy_dict_refused("{'descr': '<i4', 'fortran_order': False, 'shape': (12,), }",
                     "dtype '<i4' is not supported");
    npy_dict_refused("{'descr': '<f2', 'fortran_order': False, 'shape': (24,), }", "'<f2'");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (7,), }", "truncated");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }",
                     "8 trailing bytes");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, "
                     "4294967296, 2), }", "overflows");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, "
                     "6), }", "more than AG_MAX_RANK");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (6), }", "not the tuple");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (06,), }", "axis size");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (-6,), }", "axis size");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (6 2), }", "',' or ')'");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': [6], }", "not a tuple");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False}", "lacks");
    npy_dict_refused("{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (6,)}",
                     "repeated key");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': 0, 'shape': (6,)}", "True or False");
    npy_dict_refused("{'descr': 8, 'fortran_order': False, 'shape': (6,)}", "short string");
    npy_dict_refused("{'descr': '<f8' 'fortran_order': False, 'shape': (6,)}", "',' or '}'");
    npy_dict_refused("{'descr': '<f8', 'fortran_order': False, 'shape': (6,)} x", "after the dict");
    npy_dict_refused("['descr', '<f8']", "not a dict");
    npy_dict_refused("{descr: '<f8'}", "expected a key");
    npy_dict_refused("{'descr' '<f8'}", "':'");
    npy_dict_refused("{'de\\scr': '<f8'}", "expected a key");
    npy_dict_refused("{'descr': '<f8", "short string");
    unsigned char b[512];
    size_t n = npy_file(b, "{'descr': '<f8', 'fortran_order': False, 'shape': (6,), }", SIX, 48);
    b[8] = 0xff; /* the header length lies: past the file's end */
    npy_refused(b, n, AG_ERR_FORMAT, "header length 255 is more than");
    b[8] = (unsigned char)(n - 10 - 48);
    b[6] = 4;
    npy_refused(b, n, AG_ERR_FORMAT, "unsupported version 4.0");
    npy_refused(b, 9, AG_ERR_FORMAT, "truncated in the preamble");
    memcpy(b, "\x93NUMPY\x02\x00\x01", 9);
    npy_refused(b, 11, AG_ERR_FORMAT, "truncated in the preamble");
    npy_refused("PK\x03\x04", 4, AG_ERR_FORMAT, "not a .npy file");
    npy_refused("", 0, AG_ERR_FORMAT, "not a .npy file");
    /* a long header (version 2.0) is refused before it is read */
    memcpy(b, "\x93NUMPY\x02\x00\x00\x20\x00\x00", 12);
    memset(b + 12, ' ', 400);
    npy_refused(b, 412, AG_ERR_FORMAT, "header length 8192 is more than");
}

Test(npy, refuses_a_header_longer_than_any_float_array_needs)
{
    size_t n = 12 + 5000;
    unsigned char *b = malloc(n);
    memcpy(b, "\x93NUMPY\x02\x00", 8);
    b[8] = (unsigned char)(5000 & 0xff);
    b[9] = (unsigned char)(5000 >> 8);
    b[10] = b[11] = 0;
    memset(b + 12, ' ', 5000);
    npy_refused(b, n, AG_ERR_FORMAT, "a header of 5000 bytes");
    free(b);
}

Test(npy, null_arguments_and_bad_paths)
{
    nn_error err;
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(2));
    ag_tensor *y = x;
    cr_assert_eq(nn_npy_save(NULL, "/tmp/x.npy", &err), AG_ERR_NULL);
    cr_assert(strstr(err.msg, "nn_npy_save: x is NULL"));
    cr_assert_eq(nn_npy_save(x, NULL, &err), AG_ERR_NULL);
    cr_assert_eq(nn_npy_save(x, "", &err), AG_ERR_VALUE);
    cr_assert_eq(nn_npy_save(x, "/nonexistent-dir/x.npy", &err), AG_ERR_IO);
    cr_assert(strstr(err.msg, "nn_npy_save: cannot create"), "%s", err.msg);
    cr_assert_eq(nn_npy_load(NULL, &y, &err), AG_ERR_NULL);
    cr_assert_eq(nn_npy_load("/tmp", NULL, &err), AG_ERR_NULL);
    cr_assert_eq(nn_npy_load("/tmp", &y, &err), AG_ERR_IO);
    cr_assert_null(y);
    cr_assert(strstr(err.msg, "a directory"), "%s", err.msg);
    cr_assert_eq(nn_npy_load("/nonexistent-dir/x.npy", &y, &err), AG_ERR_IO);
    ag_tensor_free(x);
}

Test(npy, every_allocation_of_a_load_fails_cleanly)
{
    char path[64];
    temp_path(path);
    ag_tensor *x = ag_full(AG_F64, AG_SHAPE(3, 2), 0.5);
    cr_assert_eq(nn_npy_save(x, path, NULL), AG_OK);
    for (size_t k = 1;; k++) {
        test_alloc a;
        test_alloc_install(&a, k);
        ag_tensor *y = NULL;
        nn_error err;
        ag_status s = nn_npy_load(path, &y, &err);
        bool failed = a.failed;
        if (!failed) {
            cr_assert_eq(s, AG_OK);
            cr_assert(same_bits(x, y));
            ag_tensor_free(y);
        }
        test_alloc_remove();
        cr_assert_eq(a.live_bytes, 0, "leak when allocation %zu fails", k);
        if (!failed)
            break;
        cr_assert_eq(s, AG_ERR_NOMEM);
        cr_assert_null(y);
        cr_assert(strstr(err.msg, "out of memory"), "%s", err.msg);
    }
    ag_tensor_free(x);
    unlink(path);
}

/* Saves x to dir/name with the file size limit at limit bytes: the write
 * fails (EFBIG) and leaves nothing in dir, the temporary file included. */
static void save_over_limit(const ag_tensor *x, bool npy, rlim_t limit)
{
    char dir[64], path[96];
    strcpy(dir, "/tmp/nn_test_interop_dir_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/out", dir);
    struct rlimit was, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
    lim = was;
    lim.rlim_cur = limit;
    signal(SIGXFSZ, SIG_IGN); /* so the write fails with EFBIG instead of killing us */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    nn_error err;
    ag_status s = npy ? nn_npy_save(x, path, &err)
                      : nn_safetensors_save(path, (nn_param[]){{"x", (ag_tensor *)x}}, 1, NULL, 0,
                                            &err);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
    cr_assert_eq(s, AG_ERR_IO, "%s", err.msg);
    cr_assert(strstr(err.msg, "cannot write") && strstr(err.msg, strerror(EFBIG)), "%s", err.msg);
    DIR *d = opendir(dir);
    size_t entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        entries += e->d_name[0] != '.';
    closedir(d);
    cr_assert_eq(entries, 0, "the failed save left a file");
    rmdir(dir);
}

Test(interop, a_failed_write_says_why_and_leaves_nothing)
{
    ag_tensor *x = ag_full(AG_F64, AG_SHAPE(3000), 1.0); /* 24 kB: past stdio's buffer */
    for (rlim_t limit = 0; limit <= 9000; limit += 4500) {
        save_over_limit(x, true, limit);
        save_over_limit(x, false, limit);
    }
    ag_tensor_free(x);
}

/* --------------------------------------------------------- safetensors */

Test(safetensors, round_trips_names_metadata_and_values)
{
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    ag_tensor *a = ag_rand_normal(AG_F32, AG_SHAPE(3, 4), 0, 1, &rng);
    ag_tensor *b = ag_rand_normal(AG_F64, AG_SHAPE(1, 2, 1, 2, 1, 2, 1, 2), 0, 1, &rng);
    ag_tensor *c = ag_scalar(AG_F64, -0.0);
    ag_tensor *d = ag_zeros(AG_F32, AG_SHAPE(0, 5));
    const nn_param ts[] = {{"layer.\"a\"\\\n\x01", a}, {"b \xc3\xa9\xe2\x98\xba\xf0\x9f\x98\x80", b},
                           {"c", c}, {"d", d}};
    const nn_meta meta[] = {{"format", "pt"}, {"k\t", "v \"quoted\""}};
    char path[64];
    temp_path(path);
    nn_error err;
    cr_assert_eq(nn_safetensors_save(path, ts, 4, meta, 2, &err), AG_OK, "%s", err.msg);
    nn_safetensors *st = NULL;
    cr_assert_eq(nn_safetensors_load(path, &st, &err), AG_OK, "%s", err.msg);
    size_t n, n_meta;
    const nn_param *got = nn_safetensors_tensors(st, &n);
    const nn_meta *gm = nn_safetensors_meta(st, &n_meta);
    cr_assert_eq(n, 4);
    cr_assert_eq(n_meta, 2);
    for (size_t i = 0; i < 4; i++) {
        cr_assert_str_eq(got[i].name, ts[i].name);
        cr_assert(same_bits(got[i].tensor, ts[i].tensor), "%zu", i);
        cr_assert_eq(nn_safetensors_get(st, ts[i].name), got[i].tensor);
    }
    cr_assert_str_eq(gm[1].key, "k\t");
    cr_assert_str_eq(nn_safetensors_meta_get(st, "k\t"), "v \"quoted\"");
    cr_assert_null(nn_safetensors_meta_get(st, "nope"));
    cr_assert_null(nn_safetensors_get(st, "nope"));
    cr_assert_null(nn_safetensors_get(st, NULL));
    nn_safetensors_free(st);
    cr_assert_null(nn_safetensors_tensors(NULL, &n));
    cr_assert_eq(n, 0);
    cr_assert_null(nn_safetensors_meta(NULL, &n));
    nn_safetensors_free(NULL);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    ag_tensor_free(d);
    unlink(path);
}

Test(safetensors, writes_the_documented_bytes)
{
    /* Hand-written from the format: length, JSON padded to 8, data. */
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],"
                       "\"data_offsets\":[0,8]},\"y\":{\"dtype\":\"F64\",\"shape\":[],"
                       "\"data_offsets\":[8,16]}}";
    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    ag_tensor *x = ag_from_data(AG_F32, AG_SHAPE(2), (const float[]){1.0f, -2.0f});
    ag_tensor *y = ag_scalar(AG_F64, 0.5);
    char path[64];
    temp_path(path);
    cr_assert_eq(nn_safetensors_save(path, (nn_param[]){{"x", x}, {"y", y}}, 2,
                                     (nn_meta[]){{"format", "pt"}}, 1, NULL), AG_OK);
    unsigned char got[512];
    cr_assert_eq(read_bytes(path, got, sizeof got), 8 + padded + 16);
    cr_assert_eq(got[0], padded);
    cr_assert(memcmp(got + 1, "\0\0\0\0\0\0\0", 7) == 0);
    cr_assert(memcmp(got + 8, json, len) == 0, "header: %.*s", (int)padded, got + 8);
    for (size_t i = len; i < padded; i++)
        cr_assert_eq(got[8 + i], ' ');
    const unsigned char data[16] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f};
    cr_assert(memcmp(got + 8 + padded, data, 16) == 0);
    ag_tensor_free(x);
    ag_tensor_free(y);
    unlink(path);
}

Test(safetensors, reads_json_as_written_by_others)
{
    /* whitespace, escapes, a surrogate pair, keys in any order, the
     * tensors' data in another order than the header's */
    const char *json = " {\n \"b\\u00e9\\ud83d\\ude00\\\"\\/\\b\\f\\n\\r\\t\" : { \"shape\" : [ 1 ] ,"
                       " \"data_offsets\" : [ 40 , 48 ], \"dtype\" : \"F64\" } ,\n"
                       " \"__metadata__\" : { } , \"a\": {\"dtype\": \"F64\", \"shape\": [5],"
                       " \"data_offsets\": [0, 40]} }\t\r\n";
    nn_safetensors *st = st_load_json(json, SIX, 48);
    size_t n;
    const nn_param *ts = nn_safetensors_tensors(st, &n);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(ts[0].name, "b\xc3\xa9\xf0\x9f\x98\x80\"/\b\f\n\r\t");
    cr_assert_str_eq(ts[1].name, "a");
    cr_assert_eq(ag_get(ts[0].tensor, 0), 3.0);
    cr_assert_eq(ag_get(ts[1].tensor, 1), -2.25);
    nn_safetensors_meta(st, &n);
    cr_assert_eq(n, 0);
    nn_safetensors_free(st);
    st = st_load_json("{}", SIX, 0);
    nn_safetensors_tensors(st, &n);
    cr_assert_eq(n, 0);
    nn_safetensors_free(st);
}

Test(safetensors, refuses_bad_json)
{
    const char *ok = "\"x\":{\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[0,48]}";
    char buf[512];
    st_refused("", "not a JSON object");
    st_refused("[1]", "not a JSON object");
    snprintf(buf, sizeof buf, "{%s", ok);
    st_refused(buf, "expected ',' or '}'");
    snprintf(buf, sizeof buf, "{%s,}", ok);
    st_refused(buf, "expected a string");
    snprintf(buf, sizeof buf, "{%s} x", ok);
    st_refused(buf, "bytes after the JSON object");
    st_refused("{\"x\" {}}", "expected ':'");
    st_refused("{\"x\": 1}", "not an object");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[6]}}", "lacks");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"dtype\":\"F64\"}}", "repeated");
    st_refused("{\"x\": {\"device\":\"cpu\"}}", "not dtype, shape or data_offsets");
    st_refused("{\"x\": {\"dtype\":\"F64\" \"shape\":[6]}}", "expected ',' or '}'");
    st_refused("{\"x\": {\"dtype\"}}", "expected ':'");
    st_refused("{\"x\": {\"dtype\":\"I32\",\"shape\":[12],\"data_offsets\":[0,48]}}",
               "other than F32 and F64");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[06],\"data_offsets\":[0,48]}}",
               "non-negative integer");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[-6],\"data_offsets\":[0,48]}}",
               "non-negative integer");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[6.0],\"data_offsets\":[0,48]}}",
               "non-negative integer");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[6e0],\"data_offsets\":[0,48]}}",
               "non-negative integer");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[18446744073709551616]}}", "2^64");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":6}}", "expected '['");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[6 1]}}", "',' or ']'");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[1,1,1,1,1,1,1,1,6]}}", "AG_MAX_RANK");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[0]}}",
               "not [begin, end]");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[0,8,48]}}",
               "more than 2");
    st_refused("{\"x\": {\"dtype\":F64}}", "expected a string");
    st_refused("{\"a\tb\": 1}", "control character");
    st_refused("{\"a\\qb\": 1}", "bad escape");
    st_refused("{\"a\\u12\": 1}", "bad escape");
    st_refused("{\"a\\ud83d\": 1}", "high surrogate");
    st_refused("{\"a\\ud83d\\u0041\": 1}", "high surrogate");
    st_refused("{\"a\\ude00\": 1}", "lone low surrogate");
    st_refused("{\"a\\u0000\": 1}", "\\u0000");
    st_refused("{\"a\xc3(\": 1}", "not UTF-8");
    st_refused("{\"a\xed\xa0\x80\": 1}", "not UTF-8");
    st_refused("{\"a\xc0\xaf\": 1}", "not UTF-8");
    st_refused("{\"a\xf4\x90\x80\x80\": 1}", "not UTF-8"); /* past U+10FFFF */
    st_refused("{\"a", "ends in a string");
    st_refused("{\"a\\", "ends in a string");
    st_refused("{\"__metadata__\": [], ", "not an object");
    st_refused("{\"__metadata__\": {\"k\": 1}}", "expected a string");
    st_refused("{\"__metadata__\": {\"k\" \"v\"}}", "expected ':'");
    st_refused("{\"__metadata__\": {\"k\": \"v\" \"l\"}}", "',' or '}'");
    st_refused("{\"__metadata__\": {}, \"__metadata__\": {}}", "repeated");
}

Test(safetensors, refuses_offsets_that_do_not_tile_the_data)
{
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[0,56]}}",
               "not within the 48 data bytes");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[48,0]}}",
               "not within");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[5],\"data_offsets\":[0,48]}}",
               "'x' is F64 [5], 40 bytes, but its data_offsets [0, 48] hold 48");
    st_refused("{\"x\": {\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
               "\"data_offsets\":[0,48]}}", "the byte size of 'x' [4294967296,4294967296,4] "
               "overflows");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[0,32]},"
               "\"y\": {\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[24,48]}}", "overlaps");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
               "\"y\": {\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[24,48]}}",
               "data bytes 16 to 24 belong to no tensor");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[5],\"data_offsets\":[0,40]}}",
               "8 data bytes after the last tensor's");
    st_refused("{\"x\": {\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,24]},"
               "\"x\": {\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[24,48]}}",
               "the tensor name 'x' appears twice");
    st_refused("{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}, \"x\": {\"dtype\":\"F64\","
               "\"shape\":[6],\"data_offsets\":[0,48]}}", "the metadata key 'k' appears twice");
}

Test(safetensors, refuses_lying_or_truncated_lengths)
{
    unsigned char b[256];
    size_t n = st_file(b, "{\"x\": {\"dtype\":\"F64\",\"shape\":[6],\"data_offsets\":[0,48]}}",
                       SIX, 48);
    st_refused_bytes(b, 7, AG_ERR_FORMAT, "truncated: 7 bytes");
    b[7] = 0x10; /* 2^60: far past the file, and no allocation tries it */
    test_alloc a;
    test_alloc_install(&a, 0);
    st_refused_bytes(b, n, AG_ERR_FORMAT, "is more than the");
    test_alloc_remove();
    cr_assert_eq(a.attempts, 0);
    b[7] = 0;
    b[0] = (unsigned char)(n - 8 + 1);
    st_refused_bytes(b, n, AG_ERR_FORMAT, "is more than the");
    /* within the file but over the reference implementation's limit */
    b[0] = 0;
    b[3] = 0x10; /* 2^28 */
    char path[64];
    temp_path(path);
    FILE *f = fopen(path, "wb");
    cr_assert_eq(fwrite(b, 1, 8, f), 8);
    cr_assert_eq(ftruncate(fileno(f), (off_t)(8 + (1u << 28))), 0);
    fclose(f);
    nn_safetensors *st = NULL;
    nn_error err;
    cr_assert_eq(nn_safetensors_load(path, &st, &err), AG_ERR_FORMAT);
    cr_assert(strstr(err.msg, "limit of 100,000,000"), "%s", err.msg);
    unlink(path);
}

Test(safetensors, refuses_bad_names_and_arguments_on_save)
{
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(2));
    nn_error err;
    char path[64];
    temp_path(path);
    struct {
        nn_param ts[2];
        nn_meta meta[2];
        const char *phrase;
    } cases[] = {
        {{{NULL, x}, {"b", x}}, {{"k", "v"}, {"l", "w"}}, "NULL name"},
        {{{"a", NULL}, {"b", x}}, {{"k", "v"}, {"l", "w"}}, "NULL tensor"},
        {{{"", x}, {"b", x}}, {{"k", "v"}, {"l", "w"}}, "is empty, not UTF-8"},
        {{{"a\xff", x}, {"b", x}}, {{"k", "v"}, {"l", "w"}}, "is empty, not UTF-8"},
        {{{"__metadata__", x}, {"b", x}}, {{"k", "v"}, {"l", "w"}}, "__metadata__"},
        {{{"a", x}, {"a", x}}, {{"k", "v"}, {"l", "w"}}, "'a' is given twice"},
        {{{"a", x}, {"b", x}}, {{"k", "v"}, {"k", "w"}}, "key 'k' is given twice"},
        {{{"a", x}, {"b", x}}, {{"k", NULL}, {"l", "w"}}, "NULL or not UTF-8"},
        {{{"a", x}, {"b", x}}, {{"k", "\xc3"}, {"l", "w"}}, "NULL or not UTF-8"},
    };
    unlink(path);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(nn_safetensors_save(path, cases[i].ts, 2, cases[i].meta, 2, &err),
                     AG_ERR_VALUE, "case %zu", i);
        cr_assert(strstr(err.msg, "nn_safetensors_save") && strstr(err.msg, cases[i].phrase),
                  "case %zu: %s", i, err.msg);
        cr_assert_eq(access(path, F_OK), -1, "case %zu wrote a file", i);
    }
    cr_assert_eq(nn_safetensors_save(NULL, cases[0].ts, 2, NULL, 0, &err), AG_ERR_NULL);
    cr_assert_eq(nn_safetensors_save(path, NULL, 2, NULL, 0, &err), AG_ERR_NULL);
    cr_assert_eq(nn_safetensors_save(path, NULL, 0, NULL, 1, &err), AG_ERR_NULL);
    cr_assert(strstr(err.msg, "meta is NULL"));
    cr_assert_eq(nn_safetensors_save("/nonexistent-dir/x", NULL, 0, NULL, 0, &err), AG_ERR_IO);
    nn_safetensors *st = (nn_safetensors *)x;
    cr_assert_eq(nn_safetensors_load(NULL, &st, &err), AG_ERR_NULL);
    cr_assert_eq(nn_safetensors_load(path, NULL, &err), AG_ERR_NULL);
    cr_assert_eq(nn_safetensors_load("/nonexistent-dir/x", &st, &err), AG_ERR_IO);
    cr_assert_null(st);
    ag_tensor_free(x);
}

/* Loads path with every allocation refused in turn: a clean NOMEM each
 * time, nothing leaked, until the load goes through. */
static void sweep_allocations(const char *path, bool as_model)
{
    for (size_t k = 1;; k++) {
        test_alloc a;
        test_alloc_install(&a, k);
        nn_safetensors *st = NULL;
        nn_mlp *net = NULL;
        nn_error err;
        ag_status s = as_model ? nn_mlp_load_safetensors(path, NULL, &net, &err)
                               : nn_safetensors_load(path, &st, &err);
        bool failed = a.failed;
        nn_safetensors_free(st);
        nn_mlp_free(net);
        test_alloc_remove();
        cr_assert_eq(a.live_bytes, 0, "leak when allocation %zu fails", k);
        if (!failed) {
            cr_assert_eq(s, AG_OK, "%s", err.msg);
            return;
        }
        cr_assert_eq(s, AG_ERR_NOMEM, "allocation %zu: %s", k, err.msg);
        cr_assert(st == NULL && net == NULL);
        cr_assert(strstr(err.msg, "out of memory"), "%s", err.msg);
    }
}

Test(safetensors, every_allocation_of_a_load_fails_cleanly)
{
    ag_tensor *x = ag_full(AG_F32, AG_SHAPE(2, 3), 1.0), *y = ag_scalar(AG_F64, 2.0);
    char path[64];
    temp_path(path);
    cr_assert_eq(nn_safetensors_save(path, (nn_param[]){{"x", x}, {"y", y}}, 2,
                                     (nn_meta[]){{"k", "v"}}, 1, NULL), AG_OK);
    sweep_allocations(path, false);
    ag_tensor_free(x);
    ag_tensor_free(y);
    unlink(path);
}

/* ------------------------------------------------------ MLP <-> PyTorch */

static nn_mlp *make_mlp(ag_dtype dt, size_t L, const size_t *sizes, const nn_act *acts)
{
    nn_spec spec = {.n_layers = L, .sizes = sizes, .acts = acts, .dtype = dt,
                    .init = NN_INIT_NORMAL, .seed = 11, .leaky_slope = 0.2};
    nn_mlp *net = NULL;
    nn_error err;
    cr_assert_eq(nn_mlp_new(&spec, &net, &err), AG_OK, "%s", err.msg);
    return net;
}

Test(mlp_torch, export_uses_pytorch_names_and_layout)
{
    /* (relu, identity, leaky_relu, sigmoid): Sequential(Linear(3,4), ReLU(),
     * Linear(4,2), Linear(2,5), LeakyReLU(0.2), Linear(5,1), Sigmoid()), the
     * Linears are modules 0, 2, 3, 5 */
    const size_t sizes[] = {3, 4, 2, 5, 1};
    const nn_act acts[] = {NN_RELU, NN_IDENTITY, NN_LEAKY_RELU, NN_SIGMOID};
    const char *names[] = {"0", "2", "3", "5"};
    nn_mlp *net = make_mlp(AG_F64, 4, sizes, acts);
    char path[64];
    temp_path(path);
    nn_error err;
    cr_assert_eq(nn_mlp_save_safetensors(net, path, &err), AG_OK, "%s", err.msg);
    nn_safetensors *st = NULL;
    cr_assert_eq(nn_safetensors_load(path, &st, &err), AG_OK, "%s", err.msg);
    size_t n;
    const nn_param *ts = nn_safetensors_tensors(st, &n);
    const nn_param *ps = nn_mlp_params(net, NULL);
    cr_assert_eq(n, 8);
    for (size_t l = 0; l < 4; l++) {
        char w[16], b[16];
        snprintf(w, sizeof w, "%s.weight", names[l]);
        snprintf(b, sizeof b, "%s.bias", names[l]);
        cr_assert_str_eq(ts[2 * l].name, w);
        cr_assert_str_eq(ts[2 * l + 1].name, b);
        const ag_tensor *W = ts[2 * l].tensor;
        cr_assert_eq(ag_tensor_shape(W)[0], sizes[l + 1]);
        cr_assert_eq(ag_tensor_shape(W)[1], sizes[l]);
        for (size_t i = 0; i < sizes[l]; i++)
            for (size_t o = 0; o < sizes[l + 1]; o++)
                cr_assert_eq(ag_get(W, o * sizes[l] + i), ag_get(ps[2 * l].tensor, i * sizes[l + 1] + o));
        cr_assert(same_bits(ts[2 * l + 1].tensor, ps[2 * l + 1].tensor));
    }
    cr_assert_str_eq(nn_safetensors_meta_get(st, "format"), "pt");
    cr_assert_str_eq(nn_safetensors_meta_get(st, "nn.activations"), "relu,identity,leaky_relu,sigmoid");
    cr_assert_eq(strtod(nn_safetensors_meta_get(st, "nn.leaky_slope"), NULL), 0.2);
    nn_safetensors_free(st);
    nn_mlp_free(net);
    unlink(path);
}

Test(mlp_torch, import_rebuilds_the_same_model)
{
    const size_t sizes[] = {3, 6, 6, 2};
    const nn_act acts[] = {NN_TANH, NN_LEAKY_RELU, NN_IDENTITY};
    char path[64];
    temp_path(path);
    for (int dt = 0; dt < 2; dt++) {
        nn_mlp *net = make_mlp(dt ? AG_F64 : AG_F32, 3, sizes, acts), *back = NULL;
        nn_error err;
        cr_assert_eq(nn_mlp_save_safetensors(net, path, &err), AG_OK, "%s", err.msg);
        cr_assert_eq(nn_mlp_load_safetensors(path, NULL, &back, &err), AG_OK, "%s", err.msg);
        const nn_spec *a = nn_mlp_spec(net), *b = nn_mlp_spec(back);
        cr_assert_eq(b->n_layers, 3);
        cr_assert_eq(b->dtype, a->dtype);
        cr_assert_eq(b->leaky_slope, 0.2);
        cr_assert(memcmp(a->sizes, b->sizes, 4 * sizeof(size_t)) == 0);
        cr_assert(memcmp(a->acts, b->acts, 3 * sizeof(nn_act)) == 0);
        cr_assert(memcmp(nn_mlp_data(net), nn_mlp_data(back),
                         nn_mlp_param_count(net) * ag_dtype_size(a->dtype)) == 0);
        nn_mlp_free(net);
        nn_mlp_free(back);
    }
    unlink(path);
}

/* A file as PyTorch's save_file writes one: no nn.* metadata. */
static void write_torch_file(const char *path)
{
    ag_tensor *w0 = ag_from_data(AG_F64, AG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    ag_tensor *b0 = ag_from_data(AG_F64, AG_SHAPE(2), (const double[]){0.1, -0.1});
    ag_tensor *w2 = ag_from_data(AG_F64, AG_SHAPE(1, 2), (const double[]){0.5, -0.5});
    ag_tensor *b2 = ag_from_data(AG_F64, AG_SHAPE(1), (const double[]){1.0 / 3});
    nn_param ts[] = {{"0.weight", w0}, {"0.bias", b0}, {"2.weight", w2}, {"2.bias", b2}};
    cr_assert_eq(nn_safetensors_save(path, ts, 4, (nn_meta[]){{"format", "pt"}}, 1, NULL), AG_OK);
    for (size_t i = 0; i < 4; i++)
        ag_tensor_free(ts[i].tensor);
}

Test(mlp_torch, import_of_a_foreign_file_takes_the_callers_spec)
{
    char path[64];
    temp_path(path);
    write_torch_file(path);
    const size_t sizes[] = {3, 2, 1};
    const nn_act acts[] = {NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F32};
    nn_mlp *net = NULL;
    nn_error err;
    cr_assert_eq(nn_mlp_load_safetensors(path, &spec, &net, &err), AG_OK, "%s", err.msg);
    const nn_param *ps = nn_mlp_params(net, NULL);
    /* W1 = 0.weightᵀ: [[1, 4], [2, 5], [3, 6]]; f64 values rounded to f32 */
    const double W1[] = {1, 4, 2, 5, 3, 6};
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(ag_get(ps[0].tensor, i), W1[i]);
    cr_assert_eq(ag_get(ps[1].tensor, 0), (double)0.1f);
    cr_assert_eq(ag_get(ps[3].tensor, 0), (double)(float)(1.0 / 3));
    cr_assert_eq(ag_tensor_dtype(ps[0].tensor), AG_F32);
    nn_mlp_free(net);
    /* without a spec: there is no nn.activations to rebuild it from */
    net = (nn_mlp *)path;
    cr_assert_eq(nn_mlp_load_safetensors(path, NULL, &net, &err), AG_ERR_VALUE);
    cr_assert(strstr(err.msg, "no nn.activations metadata") && strstr(err.msg, "pass a spec"),
              "%s", err.msg);
    cr_assert_null(net);
    unlink(path);
}

/* The import of path (spec may be NULL) fails with s, naming phrase. */
static void import_refused(const char *path, const nn_spec *spec, ag_status s, const char *phrase)
{
    nn_mlp *net = (nn_mlp *)path;
    nn_error err;
    test_alloc a;
    test_alloc_install(&a, 0);
    cr_assert_eq(nn_mlp_load_safetensors(path, spec, &net, &err), s, "%s", err.msg);
    test_alloc_remove();
    cr_assert_eq(a.live_bytes, 0);
    cr_assert_null(net);
    cr_assert(strstr(err.msg, "nn_mlp_load_safetensors") && strstr(err.msg, phrase),
              "message: %s", err.msg);
}

/* A file of the given tensors and nn.* metadata. */
static void write_model_file(const char *path, const nn_param *ts, size_t n, const char *acts,
                             const char *slope)
{
    nn_meta meta[] = {{"nn.activations", acts}, {"nn.leaky_slope", slope}};
    cr_assert_eq(nn_safetensors_save(path, ts, n, meta, acts ? (slope ? 2 : 1) : 0, NULL), AG_OK);
}

Test(mlp_torch, import_refuses_files_that_are_not_the_model)
{
    char path[64];
    temp_path(path);
    ag_tensor *w = ag_zeros(AG_F64, AG_SHAPE(2, 3)), *b = ag_zeros(AG_F64, AG_SHAPE(2));
    ag_tensor *b32 = ag_zeros(AG_F32, AG_SHAPE(2)), *w3 = ag_zeros(AG_F64, AG_SHAPE(3, 2));
    ag_tensor *huge = ag_zeros(AG_F64, AG_SHAPE(1u << 30, 0));
    nn_param good[] = {{"0.weight", w}, {"0.bias", b}};
    write_model_file(path, good, 2, "tanh", "0.5");
    nn_mlp *net = NULL;
    cr_assert_eq(nn_mlp_load_safetensors(path, NULL, &net, NULL), AG_OK);
    cr_assert_eq(nn_mlp_spec(net)->leaky_slope, 0.5);
    nn_mlp_free(net);
    write_model_file(path, good, 2, "tanh,swish", NULL);
    import_refused(path, NULL, AG_ERR_VALUE, "an unknown activation name");
    write_model_file(path, good, 2, "", NULL);
    import_refused(path, NULL, AG_ERR_VALUE, "an unknown activation name");
    write_model_file(path, good, 2, "tanh", "0.5x");
    import_refused(path, NULL, AG_ERR_VALUE, "nn.leaky_slope '0.5x' is not a finite number");
    write_model_file(path, good, 2, "tanh", "inf");
    import_refused(path, NULL, AG_ERR_VALUE, "not a finite number");
    write_model_file(path, good, 2, "tanh,tanh", NULL);
    import_refused(path, NULL, AG_ERR_VALUE, "no tensor '2.weight' (the model's W2)");
    write_model_file(path, (nn_param[]){{"0.weight", w}}, 1, "tanh", NULL);
    import_refused(path, NULL, AG_ERR_VALUE, "no tensor '0.bias' (the model's b1)");
    write_model_file(path, (nn_param[]){{"0.weight", w}, {"0.bias", b}, {"1.weight", w}}, 3,
                     "tanh", NULL);
    import_refused(path, NULL, AG_ERR_VALUE, "'1.weight' is not a parameter of the model");
    write_model_file(path, (nn_param[]){{"0.weight", w}, {"0.bias", w3}}, 2, "tanh", NULL);
    import_refused(path, NULL, AG_ERR_SHAPE, "'0.bias' is [3,2]; the model's b1 needs [2]");
    write_model_file(path, (nn_param[]){{"0.weight", b}, {"0.bias", b}}, 2, "tanh", NULL);
    import_refused(path, NULL, AG_ERR_SHAPE, "'0.weight' is [2]; the model's W1 needs [1,1]");
    write_model_file(path, (nn_param[]){{"0.weight", w}, {"0.bias", b32}}, 2, "tanh", NULL);
    import_refused(path, NULL, AG_ERR_DTYPE, "differ in dtype");
    /* sizes no data backs (an empty [2^30, 0] weight) are refused before allocating */
    write_model_file(path, (nn_param[]){{"0.weight", huge}, {"0.bias", b}}, 2, "tanh", NULL);
    import_refused(path, NULL, AG_ERR_SHAPE, "'0.bias' is [2]; the model's b1 needs [1073741824]");
    /* with a spec: the file's activations must agree, the shapes fit */
    const size_t sizes[] = {3, 2};
    nn_spec spec = {.n_layers = 1, .sizes = sizes, .acts = (nn_act[]){NN_RELU}, .dtype = AG_F64};
    write_model_file(path, good, 2, "tanh", NULL);
    import_refused(path, &spec, AG_ERR_VALUE, "the file's activations (tanh) are not the spec's");
    spec.acts = (nn_act[]){NN_TANH};
    spec.sizes = (const size_t[]){2, 3};
    import_refused(path, &spec, AG_ERR_SHAPE, "'0.weight' is [2,3]; the model's W1 needs [3,2]");
    spec.n_layers = 0; /* nn_mlp_new's checks, named as nn_mlp_new's */
    nn_mlp *none = (nn_mlp *)path;
    cr_assert_eq(nn_mlp_load_safetensors(path, &spec, &none, NULL), AG_ERR_VALUE);
    cr_assert_null(none);
    import_refused("/nonexistent-dir/x", NULL, AG_ERR_IO, "cannot open");
    nn_error err;
    cr_assert_eq(nn_mlp_load_safetensors(NULL, NULL, &net, &err), AG_ERR_NULL);
    cr_assert_eq(nn_mlp_load_safetensors(path, NULL, NULL, &err), AG_ERR_NULL);
    cr_assert_eq(nn_mlp_save_safetensors(NULL, path, &err), AG_ERR_NULL);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_tensor_free(b32);
    ag_tensor_free(w3);
    ag_tensor_free(huge);
    unlink(path);
}

Test(mlp_torch, every_allocation_of_export_and_import_fails_cleanly)
{
    const size_t sizes[] = {2, 3, 1};
    nn_mlp *net = make_mlp(AG_F32, 2, sizes, (nn_act[]){NN_GELU, NN_SILU});
    char path[64];
    temp_path(path);
    for (size_t k = 1;; k++) {
        test_alloc a;
        test_alloc_install(&a, k);
        nn_error err;
        ag_status s = nn_mlp_save_safetensors(net, path, &err);
        bool failed = a.failed;
        test_alloc_remove();
        cr_assert_eq(a.live_bytes, 0, "leak when allocation %zu fails", k);
        if (!failed) {
            cr_assert_eq(s, AG_OK);
            break;
        }
        cr_assert_eq(s, AG_ERR_NOMEM);
        cr_assert(strstr(err.msg, "out of memory"), "%s", err.msg);
    }
    sweep_allocations(path, true);
    nn_mlp_free(net);
    unlink(path);
}
