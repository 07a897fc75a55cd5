/* test_nn_data.c: the CSV and IDX loaders on the real data sets and on
 * malformed files; one-hot, shuffles, the split, batches, scaling and
 * accuracy. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn.h"
#include "testalloc.h"

#define DATA PROJECT_DATA_DIR

/* Writes n bytes to a fresh temporary file; its name goes into path. */
static void temp_file(char path[64], const void *data, size_t n)
{
    strcpy(path, "/tmp/nn_test_data_XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Loads text as a CSV file in dtype dt, with nn_csv_load (targets 0) or
 * nn_csv_load_regression; returns the status, err filled. */
static ag_status load_csv(const char *text, ag_dtype dt, size_t targets, nn_dataset *d,
                          nn_error *e)
{
    char path[64];
    temp_file(path, text, strlen(text));
    ag_status s = targets ? nn_csv_load_regression(path, dt, targets, d, e)
                          : nn_csv_load(path, dt, d, e);
    remove(path);
    return s;
}

static ag_status load_text(const char *text, nn_dataset *d, nn_error *e)
{
    return load_csv(text, AG_F64, 0, d, e);
}

/* ---------------------------------------------------------------- CSV */

Test(nn_data, csv_iris_with_header)
{
    nn_dataset d;
    nn_error e;
    cr_assert_eq(nn_csv_load(DATA "/iris.csv", AG_F32, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 150);
    cr_expect_eq(d.features, 4);
    cr_expect_eq(d.classes, 3);
    cr_expect_eq(ag_tensor_shape(d.x)[0], 150);
    cr_expect_eq(ag_tensor_shape(d.x)[1], 4);
    cr_expect_eq(ag_tensor_dtype(d.labels), AG_F32);
    float first[] = {5.1f, 3.5f, 1.4f, 0.2f}, last[] = {5.9f, 3.0f, 5.1f, 1.8f};
    for (size_t j = 0; j < 4; j++) {
        cr_expect_eq(ag_get(d.x, j), first[j]);
        cr_expect_eq(ag_get(d.x, 149 * 4 + j), last[j]);
    }
    cr_expect_eq(ag_get(d.labels, 0), 0);
    cr_expect_eq(ag_get(d.labels, 149), 2);
    nn_dataset_free(&d);
    cr_expect_null(d.x);
    nn_dataset_free(NULL);
}

Test(nn_data, csv_breast_cancer_and_digits)
{
    nn_dataset d;
    nn_error e;
    cr_assert_eq(nn_csv_load(DATA "/breast_cancer.csv", AG_F64, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 569);
    cr_expect_eq(d.features, 30);
    cr_expect_eq(d.classes, 2);
    cr_expect_eq(ag_get(d.x, 0), 17.99);
    cr_expect_eq(ag_get(d.x, 568 * 30 + 29), 0.07039);
    cr_expect_eq(ag_get(d.labels, 568), 1);
    double benign = 0;
    for (size_t i = 0; i < d.n; i++)
        benign += ag_get(d.labels, i);
    cr_expect_eq(benign, 357);
    nn_dataset_free(&d);
    cr_assert_eq(nn_csv_load(DATA "/digits.csv", AG_F64, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 1797, "no header line: every line is data");
    cr_expect_eq(d.features, 64);
    cr_expect_eq(d.classes, 10);
    cr_expect_eq(ag_get(d.x, 2), 5);
    cr_expect_eq(ag_get(d.x, 1796 * 64 + 2), 10);
    cr_expect_eq(ag_get(d.labels, 0), 0);
    cr_expect_eq(ag_get(d.labels, 1796), 8);
    cr_expect_eq(nn_max_abs(d.x), 16);
    nn_dataset_free(&d);
}

Test(nn_data, csv_tolerates_crlf_blank_lines_and_spaces)
{
    nn_dataset d;
    nn_error e;
    cr_assert_eq(load_text("\r\n1.5, -2 ,1\r\n\r\n  3,4e1,0\r\n\n", &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 2);
    cr_expect_eq(d.features, 2);
    cr_expect_eq(d.classes, 2);
    cr_expect_eq(ag_get(d.x, 1), -2);
    cr_expect_eq(ag_get(d.x, 3), 40);
    nn_dataset_free(&d);
}

Test(nn_data, csv_malformed_inputs_give_clear_errors_and_no_leaks)
{
    struct { const char *text; ag_status s; const char *msg; } cases[] = {
        {"1,2,0\n3,abc,1\n", AG_ERR_FORMAT, "line 2, field 2: 'abc' is not a finite number"},
        {"1,2,0\n3,4\n", AG_ERR_FORMAT, "line 2: 2 fields, but line 1 has 3"},
        {"1,2,0\n3,4,1,9\n", AG_ERR_FORMAT, "line 2: 4 fields, but line 1 has 3"},
        {"1,,0\n", AG_ERR_FORMAT, "line 1, field 2: '' is not a finite number"},
        {"1,nan,0\n", AG_ERR_FORMAT, "'nan' is not a finite number"},
        {"1,2,1.5\n", AG_ERR_FORMAT, "line 1: label '1.5' is not a class index"},
        {"1,2,-1\n", AG_ERR_FORMAT, "label '-1' is not a class index"},
        {"3,2,a,b\n1,2,0\n3,4,1\n", AG_ERR_FORMAT, "the header says 3 rows, the file has 2"},
        {"2,3,a,b\n1,2,0\n3,4,1\n", AG_ERR_FORMAT, "the header says 3 features"},
        {"2,2,a,b\n1,2,0\n3,4,2\n", AG_ERR_FORMAT, "line 3: label '2' is not a class index (an integer in [0, 2))"},
        {"", AG_ERR_FORMAT, "no data rows"},
        {"\n\n", AG_ERR_FORMAT, "no data rows"},
        {"2,1,a,b\n", AG_ERR_FORMAT, "the header says 2 rows, the file has 0"},
        {"5\n6\n", AG_ERR_FORMAT, "need features and a label"},
        {"1,12345678901234567890123456789012345678901234567890123456789012345678,0\n",
         AG_ERR_FORMAT, "field 2: '123456789012"},
        {"a,b,c\n1,2,3,0\n", AG_ERR_FORMAT,
         "the header line names 3 columns, but line 2 has 4 fields"},
        {"a,b,label\n", AG_ERR_FORMAT, "no data rows"},
        {"x,1,label\n1,2,0\n", AG_ERR_FORMAT,
         "line 1, field 1: 'x' is not a finite number"}, /* a number in it: data */
        {"x,,label\n1,2,0\n", AG_ERR_FORMAT, "line 1, field 1: 'x'"}, /* an empty name: data */
        {"\xEF\xBB\xBF" "1,2,0\n\xEF\xBB\xBF" "3,4,1\n", AG_ERR_FORMAT,
         "line 2, field 1: '\xEF\xBB\xBF" "3' is not a finite number"}, /* a BOM only at the start */
        {"1,2,9007199254740992\n", AG_ERR_FORMAT,
         "line 1: label '9007199254740992' is too large: f64 holds class indices exactly only "
         "below 9007199254740992"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_alloc a;
        test_alloc_install(&a, 0);
        nn_dataset d = {.n = 99};
        nn_error e;
        cr_expect_eq(load_text(cases[i].text, &d, &e), cases[i].s, "case %zu: %s", i, e.msg);
        cr_expect_eq(e.status, cases[i].s);
        cr_expect(strstr(e.msg, cases[i].msg), "case %zu: '%s' lacks '%s'", i, e.msg, cases[i].msg);
        cr_expect(d.x == NULL && d.labels == NULL && d.n == 0, "case %zu: nothing half-made", i);
        test_alloc_remove();
        cr_expect_eq(a.live_bytes, 0, "case %zu leaks", i);
    }
}

Test(nn_data, csv_skips_a_bom_and_a_line_of_column_names)
{
    nn_dataset d;
    nn_error e;
    const char *named = "\xEF\xBB\xBFsepal_length, sepal_width ,species\r\n5.1,3.5,0\r\n4.9,3,2\r\n";
    cr_assert_eq(load_csv(named, AG_F32, 0, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 2, "the names line is not a row");
    cr_expect_eq(d.features, 2);
    cr_expect_eq(d.classes, 3);
    cr_expect_eq(ag_get(d.x, 0), 5.1f, "the BOM is not part of the first field");
    cr_expect_eq(ag_get(d.x, 3), 3);
    cr_expect_eq(ag_get(d.labels, 1), 2);
    nn_dataset_free(&d);
    /* a BOM before data, and before sklearn's header line */
    cr_assert_eq(load_text("\xEF\xBB\xBF" "7,8,1\n", &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 1);
    cr_expect_eq(ag_get(d.x, 0), 7);
    nn_dataset_free(&d);
    cr_assert_eq(load_text("\xEF\xBB\xBF" "2,2,no,yes\n1,2,0\n3,4,0\n", &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 2);
    cr_expect_eq(d.classes, 2, "from the header, though only class 0 occurs");
    nn_dataset_free(&d);
    /* quoted names are names too; "nan" and "inf" are numbers, so a line
     * of them is data (and an error) */
    cr_assert_eq(load_text("\"a\",\"b\",\"class\"\n1,2,1\n", &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 1);
    nn_dataset_free(&d);
    cr_expect_eq(load_text("nan,inf,x\n1,2,1\n", &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "line 1, field 1: 'nan' is not a finite number"), "%s", e.msg);
}

Test(nn_data, csv_label_limits_follow_the_dtype)
{
    /* f32 stores every integer exactly only up to 2^24 = 16777216 (2^24 + 1
     * would round to 2^24), f64 up to 2^53 = 9007199254740992. */
    nn_dataset d;
    nn_error e;
    cr_assert_eq(load_csv("1,16777215\n", AG_F32, 0, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.classes, 16777216);
    nn_dataset_free(&d);
    const char *too_big[] = {"1,16777216\n", "1,16777217\n"};
    for (size_t i = 0; i < 2; i++) {
        cr_expect_eq(load_csv(too_big[i], AG_F32, 0, &d, &e), AG_ERR_FORMAT, "%s", too_big[i]);
        cr_expect(strstr(e.msg, "is too large: f32 holds class indices exactly only below "
                                "16777216 (2^24; f64 allows 2^53)"), "%s", e.msg);
        cr_expect_null(d.x);
    }
    cr_assert_eq(load_csv("1,16777217\n", AG_F64, 0, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.classes, 16777218);
    cr_expect_eq(ag_get(d.labels, 0), 16777217);
    nn_dataset_free(&d);
    cr_assert_eq(load_csv("1,9007199254740991\n", AG_F64, 0, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.classes, (size_t)9007199254740992u);
    nn_dataset_free(&d);
    cr_expect_eq(load_csv("1,9007199254740992\n", AG_F64, 0, &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "too large: f64 holds class indices exactly only below "
                            "9007199254740992"), "%s", e.msg);
}

Test(nn_data, csv_regression_targets)
{
    nn_dataset d;
    nn_error e;
    const char *text = "x1,x2,y1,y2\n1,2,0.5,-1.25\n3,4,2.5e3,7\n";
    cr_assert_eq(load_csv(text, AG_F64, 2, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 2);
    cr_expect_eq(d.features, 2);
    cr_expect_eq(d.classes, 0, "real targets have no classes");
    cr_assert_eq(ag_tensor_rank(d.labels), 2);
    cr_expect_eq(ag_tensor_shape(d.labels)[0], 2);
    cr_expect_eq(ag_tensor_shape(d.labels)[1], 2);
    double x[] = {1, 2, 3, 4}, y[] = {0.5, -1.25, 2500, 7};
    for (size_t i = 0; i < 4; i++) {
        cr_expect_eq(ag_get(d.x, i), x[i], "x[%zu]", i);
        cr_expect_eq(ag_get(d.labels, i), y[i], "y[%zu]", i);
    }
    nn_dataset_free(&d);
    cr_assert_eq(load_csv(text, AG_F32, 1, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.features, 3);
    cr_expect_eq(ag_tensor_shape(d.labels)[1], 1, "one target: [n, 1], a model's output shape");
    cr_expect_eq(ag_get(d.x, 5), 2500);
    cr_expect_eq(ag_get(d.labels, 1), 7);
    cr_expect_eq(ag_tensor_dtype(d.labels), AG_F32);
    nn_dataset_free(&d);
    cr_assert_eq(load_csv("2,1,t\n1,0.5\n3,-1.5\n", AG_F64, 1, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.features, 1, "sklearn's header counts the features");
    cr_expect_eq(ag_get(d.labels, 1), -1.5);
    nn_dataset_free(&d);
    struct { const char *text; size_t k; ag_dtype dt; const char *msg; } bad[] = {
        {text, 4, AG_F64, "nn_csv_load_regression: "},
        {text, 4, AG_F64, "line 2: need features and 4 targets, found 4 fields"},
        {"1.5,2,abc\n", 1, AG_F64, "line 1, field 3: 'abc' is not a finite number"},
        {"1,2,1e39\n", 1, AG_F32, "line 1, field 3: '1e39' is out of the range of f32"},
        {"2,3,t\n1,2,3\n4,5,6\n", 1, AG_F64, "the header says 3 features, but rows have 3 "
                                                "fields (features + targets)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(load_csv(bad[i].text, bad[i].dt, bad[i].k, &d, &e), AG_ERR_FORMAT, "%zu", i);
        cr_expect(strstr(e.msg, bad[i].msg), "case %zu: '%s' lacks '%s'", i, e.msg, bad[i].msg);
        cr_expect_null(d.x);
        cr_expect_null(d.labels);
    }
    cr_expect_eq(nn_csv_load_regression(DATA "/iris.csv", AG_F64, 0, &d, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "nn_csv_load_regression: n_targets is 0"), "%s", e.msg);
    cr_expect_eq(nn_csv_load_regression(NULL, AG_F64, 1, &d, &e), AG_ERR_NULL);
    cr_expect_eq(nn_csv_load_regression(DATA "/iris.csv", AG_F64, 1, NULL, &e), AG_ERR_NULL);
    cr_expect_eq(nn_csv_load_regression("/nonexistent/r.csv", AG_F64, 1, &d, &e), AG_ERR_IO);
    cr_expect(strstr(e.msg, "nn_csv_load_regression: cannot open"), "%s", e.msg);
}

/* A file with a BOM, a names line and CRLF line ends, whose target is
 * y = 2·x1 - x2 + 0.5; the split keeps each target with its row. */
Test(nn_data, csv_regression_file_splits_and_trains)
{
    nn_dataset d, tr, te;
    nn_error e;
    cr_assert_eq(nn_csv_load_regression(TEST_DATA_DIR "/linear_bom.csv", AG_F64, 1, &d, &e),
                 AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 8);
    cr_expect_eq(d.features, 2);
    for (size_t i = 0; i < d.n; i++)
        cr_expect_eq(ag_get(d.labels, i), 2 * ag_get(d.x, 2 * i) - ag_get(d.x, 2 * i + 1) + 0.5,
                     "row %zu", i);
    cr_assert_eq(nn_dataset_split(&d, 3, 1, &tr, &te, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(ag_tensor_shape(te.labels)[0], 3);
    cr_expect_eq(ag_tensor_shape(te.labels)[1], 1);
    for (size_t i = 0; i < te.n; i++)
        cr_expect_eq(ag_get(te.labels, i), 2 * ag_get(te.x, 2 * i) - ag_get(te.x, 2 * i + 1) + 0.5);
    /* a linear model 2-1 (identity) fits it with MSE: targets [n, 1] match
     * the output's shape */
    size_t sizes[] = {2, 1};
    nn_act act = NN_IDENTITY;
    nn_spec spec = {.n_layers = 1, .sizes = sizes, .acts = &act, .dtype = AG_F64,
                    .init = NN_INIT_XAVIER, .seed = 1};
    nn_mlp *net;
    nn_optim *o;
    nn_optim_config c = nn_sgd(0.1);
    cr_assert_eq(nn_mlp_new(&spec, &net, &e), AG_OK, "%s", e.msg);
    cr_assert_eq(nn_mlp_optim_new(net, &c, &o, &e), AG_OK, "%s", e.msg);
    ag_tape *t = ag_tape_new();
    double loss = 1;
    for (int s = 0; s < 500; s++)
        cr_assert_eq(nn_mlp_train_step(net, t, o, NN_COST_MSE, d.x, d.labels, &loss, &e), AG_OK,
                     "%s", e.msg);
    const double *w = nn_mlp_data(net); /* W1 [2,1], b1 [1] */
    cr_expect_float_eq(w[0], 2, 1e-6, "%g", w[0]);
    cr_expect_float_eq(w[1], -1, 1e-6, "%g", w[1]);
    cr_expect_float_eq(w[2], 0.5, 1e-6, "%g", w[2]);
    ag_tape_free(t);
    nn_optim_free(o);
    nn_mlp_free(net);
    nn_dataset_free(&d);
    nn_dataset_free(&tr);
    nn_dataset_free(&te);
}

Test(nn_data, csv_binary_missing_and_null)
{
    nn_dataset d;
    nn_error e;
    char path[64];
    temp_file(path, "1,2\0,0\n", 7);
    cr_expect_eq(nn_csv_load(path, AG_F32, &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "NUL byte"), "%s", e.msg);
    remove(path);
    cr_expect_eq(nn_csv_load("/nonexistent/x.csv", AG_F32, &d, &e), AG_ERR_IO);
    cr_expect(strstr(e.msg, "cannot open '/nonexistent/x.csv'"), "%s", e.msg);
    cr_expect_eq(nn_csv_load(NULL, AG_F32, &d, &e), AG_ERR_NULL);
    cr_expect_eq(nn_csv_load(DATA "/iris.csv", AG_F32, NULL, &e), AG_ERR_NULL);
    cr_expect_eq(nn_csv_load(DATA "/iris.csv", (ag_dtype)3, &d, &e), AG_ERR_DTYPE);
    cr_expect_eq(nn_csv_load(DATA, AG_F32, &d, &e), AG_ERR_IO, "a directory: %s", e.msg);
}

Test(nn_data, csv_allocation_failures_are_clean)
{
    size_t k;
    for (k = 1; k < 20; k++) {
        test_alloc a;
        test_alloc_install(&a, k);
        nn_dataset d;
        nn_error e;
        ag_status s = nn_csv_load(DATA "/iris.csv", AG_F64, &d, &e);
        bool failed = a.failed;
        nn_dataset_free(&d);
        test_alloc_remove();
        cr_expect_eq(a.live_bytes, 0, "leak failing allocation %zu", k);
        if (!failed) {
            cr_expect_eq(s, AG_OK);
            break;
        }
        cr_expect_eq(s, AG_ERR_NOMEM, "%zu: %s", k, e.msg);
    }
    cr_expect_eq(k, 4, "text buffer, x, labels; the 4th run succeeds");
}

/* ---------------------------------------------------------------- IDX */

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX files of the first n digits from digits.csv (8x8 images, values
 * 0..16), built independently of the loader; paths into im and lb. */
static void digits_idx(size_t n, char im[64], char lb[64], size_t cut_images, size_t extra)
{
    nn_dataset d;
    cr_assert_eq(nn_csv_load(DATA "/digits.csv", AG_F64, &d, NULL), AG_OK);
    size_t ni = 16 + n * 64 + extra;
    unsigned char *img = calloc(ni, 1), *lab = calloc(8 + n, 1);
    be32(img, 0x803);
    be32(img + 4, (uint32_t)n);
    be32(img + 8, 8);
    be32(img + 12, 8);
    be32(lab, 0x801);
    be32(lab + 4, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < 64; j++)
            img[16 + i * 64 + j] = (unsigned char)ag_get(d.x, i * 64 + j);
        lab[8 + i] = (unsigned char)ag_get(d.labels, i);
    }
    temp_file(im, img, ni - cut_images);
    temp_file(lb, lab, 8 + n);
    free(img);
    free(lab);
    nn_dataset_free(&d);
}

Test(nn_data, idx_loads_images_and_labels)
{
    char im[64], lb[64];
    digits_idx(100, im, lb, 0, 0);
    nn_dataset d, ref;
    nn_error e;
    cr_assert_eq(nn_idx_load(im, lb, AG_F32, &d, &e), AG_OK, "%s", e.msg);
    cr_assert_eq(nn_csv_load(DATA "/digits.csv", AG_F32, &ref, NULL), AG_OK);
    cr_expect_eq(d.n, 100);
    cr_expect_eq(d.features, 64);
    cr_expect_eq(d.classes, 10);
    cr_expect_eq(ag_tensor_shape(d.x)[1], 64);
    cr_expect_eq(memcmp(ag_data(d.x), ag_data(ref.x), 100 * 64 * sizeof(float)), 0);
    cr_expect_eq(memcmp(ag_data(d.labels), ag_data(ref.labels), 100 * sizeof(float)), 0);
    nn_dataset_free(&d);
    nn_dataset_free(&ref);
    remove(im);
    remove(lb);
}

/* The real MNIST files, where the data directory has them (data/README.md). */
Test(nn_data, idx_real_mnist_when_present)
{
    const char *im = DATA "/mnist/t10k-images-idx3-ubyte", *lb = DATA "/mnist/t10k-labels-idx1-ubyte";
    if (access(im, R_OK) != 0 || access(lb, R_OK) != 0)
        cr_skip_test("MNIST files not in %s/mnist", DATA);
    nn_dataset d;
    nn_error e;
    cr_assert_eq(nn_idx_load(im, lb, AG_F32, &d, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(d.n, 10000);
    cr_expect_eq(d.features, 784);
    cr_expect_eq(d.classes, 10);
    cr_expect_eq(ag_get(d.labels, 0), 7, "the first t10k label is a 7");
    cr_expect_eq(nn_max_abs(d.x), 255);
    nn_dataset_free(&d);
}

Test(nn_data, idx_malformed_files_are_rejected)
{
    char im[64], lb[64], im2[64], lb2[64];
    nn_dataset d = {0};
    nn_error e;
    digits_idx(10, im, lb, 0, 0);
    cr_expect_eq(nn_idx_load(lb, im, AG_F32, &d, &e), AG_ERR_FORMAT, "swapped files");
    cr_expect(strstr(e.msg, "bad magic 0x00000801 (expected 0x00000803"), "%s", e.msg);
    cr_expect_eq(nn_idx_load(im, DATA "/iris.csv", AG_F32, &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "bad magic"), "%s", e.msg);
    digits_idx(9, im2, lb2, 0, 0);
    cr_expect_eq(nn_idx_load(im, lb2, AG_F32, &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "count mismatch: 10 images"), "%s", e.msg);
    cr_expect(strstr(e.msg, "9 labels"), "%s", e.msg);
    remove(im2);
    remove(lb2);
    digits_idx(10, im2, lb2, 1, 0); /* one pixel short */
    cr_expect_eq(nn_idx_load(im2, lb, AG_F32, &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "truncated: 639 bytes of data, the header says 640"), "%s", e.msg);
    remove(im2);
    remove(lb2);
    digits_idx(10, im2, lb2, 10 * 64 + 4, 0); /* the header cut in its last field */
    cr_expect_eq(nn_idx_load(im2, lb, AG_F32, &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "truncated header"), "%s", e.msg);
    remove(im2);
    remove(lb2);
    digits_idx(10, im2, lb2, 0, 3); /* three bytes too many */
    cr_expect_eq(nn_idx_load(im2, lb, AG_F32, &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "3 trailing bytes"), "%s", e.msg);
    remove(im2);
    remove(lb2);
    unsigned char zero_rows[16] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 8};
    temp_file(im2, zero_rows, 16);
    cr_expect_eq(nn_idx_load(im2, lb, AG_F32, &d, &e), AG_ERR_FORMAT);
    cr_expect(strstr(e.msg, "dimension 1 is 0"), "%s", e.msg);
    remove(im2);
    cr_expect_eq(nn_idx_load("/nonexistent", lb, AG_F32, &d, &e), AG_ERR_IO);
    cr_expect_eq(nn_idx_load(im, NULL, AG_F32, &d, &e), AG_ERR_NULL);
    cr_expect_eq(nn_idx_load(im, lb, (ag_dtype)9, &d, &e), AG_ERR_DTYPE);
    cr_expect_null(d.x);
    remove(im);
    remove(lb);
}

/* ------------------------------------------------------------ one-hot */

Test(nn_data, one_hot)
{
    ag_tensor *lab = ag_from_data(AG_F64, AG_SHAPE(3), (double[]){0, 2, 1}), *y = NULL;
    nn_error e;
    cr_assert_eq(nn_one_hot(lab, 3, &y, &e), AG_OK, "%s", e.msg);
    double want[] = {1, 0, 0, 0, 0, 1, 0, 1, 0};
    cr_expect_eq(ag_tensor_shape(y)[0], 3);
    cr_expect_eq(ag_tensor_shape(y)[1], 3);
    cr_expect_eq(memcmp(ag_data(y), want, sizeof want), 0);
    ag_tensor_free(y);
    y = (ag_tensor *)&y;
    cr_expect_eq(nn_one_hot(lab, 2, &y, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "labels[1] = 2 is not a class in [0, 2)"), "%s", e.msg);
    cr_expect_null(y);
    cr_expect_eq(nn_one_hot(lab, 0, &y, &e), AG_ERR_VALUE);
    ag_tensor *frac = ag_from_data(AG_F64, AG_SHAPE(1), (double[]){0.5});
    cr_expect_eq(nn_one_hot(frac, 2, &y, &e), AG_ERR_VALUE);
    ag_tensor *mat = ag_zeros(AG_F64, AG_SHAPE(2, 2));
    cr_expect_eq(nn_one_hot(mat, 2, &y, &e), AG_ERR_SHAPE);
    cr_expect_eq(nn_one_hot(NULL, 2, &y, &e), AG_ERR_NULL);
    ag_tensor_free(lab);
    ag_tensor_free(frac);
    ag_tensor_free(mat);
}

/* ----------------------------------------------------------- shuffles */

Test(nn_data, permutation_is_a_seeded_permutation)
{
    size_t a[100], b[100], c[100], seen[100] = {0};
    ag_rng r;
    ag_rng_seed(&r, 11);
    nn_permutation(a, 100, &r);
    ag_rng_seed(&r, 11);
    nn_permutation(b, 100, &r);
    ag_rng_seed(&r, 12);
    nn_permutation(c, 100, &r);
    cr_expect_eq(memcmp(a, b, sizeof a), 0, "same seed, same order");
    cr_expect_neq(memcmp(a, c, sizeof a), 0, "other seed, other order");
    size_t fixed = 0;
    for (size_t i = 0; i < 100; i++) {
        cr_assert_lt(a[i], 100);
        seen[a[i]]++;
        fixed += a[i] == i;
    }
    for (size_t i = 0; i < 100; i++)
        cr_expect_eq(seen[i], 1);
    cr_expect_lt(fixed, 10, "a shuffle moves most elements");
}

Test(nn_data, shuffle_rows_keeps_pairs_together)
{
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(50, 3)), *y = ag_zeros(AG_F64, AG_SHAPE(50));
    float *xd = ag_data(x);
    for (size_t i = 0; i < 50; i++) {
        for (size_t j = 0; j < 3; j++)
            xd[i * 3 + j] = (float)(i * 10 + j);
        ((double *)ag_data(y))[i] = (double)i;
    }
    ag_rng r;
    ag_rng_seed(&r, 4);
    cr_assert_eq(nn_shuffle_rows(x, y, &r, NULL), AG_OK);
    size_t seen[50] = {0}, moved = 0;
    for (size_t i = 0; i < 50; i++) {
        size_t id = (size_t)ag_get(y, i);
        seen[id]++;
        moved += id != i;
        for (size_t j = 0; j < 3; j++)
            cr_expect_eq(xd[i * 3 + j], (float)(id * 10 + j), "row %zu stays with its label", i);
    }
    for (size_t i = 0; i < 50; i++)
        cr_expect_eq(seen[i], 1);
    cr_expect_gt(moved, 40);
    ag_tensor *short_y = ag_zeros(AG_F64, AG_SHAPE(49));
    nn_error e;
    cr_expect_eq(nn_shuffle_rows(x, short_y, &r, &e), AG_ERR_SHAPE);
    cr_expect(strstr(e.msg, "[50,3]") && strstr(e.msg, "[49]"), "%s", e.msg);
    cr_expect_eq(nn_shuffle_rows(NULL, y, &r, &e), AG_ERR_NULL);
    cr_expect_eq(nn_shuffle_rows(x, NULL, &r, &e), AG_OK, "y is optional");
    ag_tensor_free(x);
    ag_tensor_free(y);
    ag_tensor_free(short_y);
}

/* A data set whose row i has features (i, -i) and label i % 3. */
static nn_dataset numbered(size_t n)
{
    nn_dataset d = {.n = n, .features = 2, .classes = 3};
    d.x = ag_zeros(AG_F64, AG_SHAPE(n, 2));
    d.labels = ag_zeros(AG_F64, &n, 1);
    for (size_t i = 0; i < n; i++) {
        ((double *)ag_data(d.x))[2 * i] = (double)i;
        ((double *)ag_data(d.x))[2 * i + 1] = -(double)i;
        ((double *)ag_data(d.labels))[i] = (double)(i % 3);
    }
    return d;
}

Test(nn_data, split_is_a_seeded_partition)
{
    nn_dataset all = numbered(40), tr, te, tr2, te2;
    nn_error e;
    cr_assert_eq(nn_dataset_split(&all, 10, 9, &tr, &te, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(tr.n, 30);
    cr_expect_eq(te.n, 10);
    cr_expect_eq(ag_tensor_shape(tr.x)[0], 30);
    cr_expect_eq(ag_tensor_shape(te.labels)[0], 10);
    cr_expect_eq(te.classes, 3);
    size_t seen[40] = {0}, in_order = 0;
    for (size_t i = 0; i < 40; i++) {
        const nn_dataset *d = i < 30 ? &tr : &te;
        size_t r = i < 30 ? i : i - 30, id = (size_t)ag_get(d->x, 2 * r);
        seen[id]++;
        in_order += id == i;
        cr_expect_eq(ag_get(d->x, 2 * r + 1), -(double)id);
        cr_expect_eq(ag_get(d->labels, r), (double)(id % 3));
    }
    for (size_t i = 0; i < 40; i++)
        cr_expect_eq(seen[i], 1, "row %zu in exactly one part", i);
    cr_expect_lt(in_order, 10, "the rows were shuffled");
    cr_expect_eq(ag_get(all.x, 2 * 7), 7, "the source is unchanged");
    cr_assert_eq(nn_dataset_split(&all, 10, 9, &tr2, &te2, &e), AG_OK);
    cr_expect_eq(memcmp(ag_data(te.x), ag_data(te2.x), 20 * sizeof(double)), 0, "deterministic");
    nn_dataset_free(&tr2);
    nn_dataset_free(&te2);
    cr_expect_eq(nn_dataset_split(&all, 0, 9, &tr2, &te2, &e), AG_ERR_VALUE);
    cr_expect_eq(nn_dataset_split(&all, 40, 9, &tr2, &te2, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "n_test 40 must be in [1, 40)"), "%s", e.msg);
    cr_expect_null(tr2.x);
    cr_expect_eq(nn_dataset_split(NULL, 4, 9, &tr2, &te2, &e), AG_ERR_NULL);
    nn_dataset_free(&tr);
    nn_dataset_free(&te);
    nn_dataset_free(&all);
}

/* ------------------------------------------------------------ batches */

/* Runs epochs over a numbered set of n rows with batches of B, checking
 * that each epoch covers every row once; returns the first epoch's order. */
static void check_epochs(size_t n, size_t B, bool shuffle, size_t *first_order)
{
    nn_dataset d = numbered(n);
    ag_tensor *bx = ag_zeros(AG_F64, AG_SHAPE(B, 2)), *by = ag_zeros(AG_F64, AG_SHAPE(B));
    nn_batches *it;
    nn_error e;
    cr_assert_eq(nn_batches_new(d.x, d.labels, bx, by, shuffle, 3, &it, &e), AG_OK, "%s", e.msg);
    size_t per = n / B + (n % B != 0);
    cr_expect_eq(nn_batches_per_epoch(it), per);
    test_alloc a;
    test_alloc_install(&a, 0);
    for (size_t epoch = 0; epoch < 3; epoch++) {
        size_t seen[64] = {0}, batches = 0, pos = 0;
        ag_tensor *x, *y;
        while (nn_batches_next(it, &x, &y)) {
            size_t rows = ag_tensor_shape(x)[0];
            cr_expect_eq(rows, batches + 1 < per ? B : n - B * (per - 1));
            cr_expect_eq(ag_tensor_shape(y)[0], rows);
            cr_expect_eq(ag_data(x), ag_data(bx), "filled into the caller's memory");
            for (size_t r = 0; r < rows; r++) {
                size_t id = (size_t)ag_get(x, 2 * r);
                seen[id]++;
                cr_expect_eq(ag_get(y, r), (double)(id % 3), "label travels with its row");
                if (epoch == 0 && first_order)
                    first_order[pos] = id;
                pos++;
            }
            batches++;
        }
        cr_expect_eq(batches, per);
        for (size_t i = 0; i < n; i++)
            cr_expect_eq(seen[i], 1, "epoch %zu: row %zu seen %zu times", epoch, i, seen[i]);
    }
    test_alloc_remove();
    cr_expect_eq(a.attempts, 0, "iteration allocates nothing");
    nn_batches_free(it);
    ag_tensor_free(bx);
    ag_tensor_free(by);
    nn_dataset_free(&d);
}

Test(nn_data, batches_cover_every_sample_once_per_epoch)
{
    size_t order[64], again[64];
    check_epochs(10, 4, true, order); /* 4, 4, then a partial batch of 2 */
    check_epochs(10, 4, true, again);
    cr_expect_eq(memcmp(order, again, 10 * sizeof *order), 0, "seeded");
    check_epochs(12, 4, true, NULL);  /* no partial batch */
    check_epochs(5, 8, true, NULL);   /* one batch smaller than B */
    check_epochs(10, 3, false, order);
    for (size_t i = 0; i < 10; i++)
        cr_expect_eq(order[i], i, "without shuffle, in order");
}

Test(nn_data, batches_reshuffle_every_epoch)
{
    nn_dataset d = numbered(30);
    ag_tensor *bx = ag_zeros(AG_F64, AG_SHAPE(30, 2)), *by = ag_zeros(AG_F64, AG_SHAPE(30));
    nn_batches *it;
    cr_assert_eq(nn_batches_new(d.x, d.labels, bx, by, true, 5, &it, NULL), AG_OK);
    double first[60];
    ag_tensor *x;
    cr_assert(nn_batches_next(it, &x, NULL));
    memcpy(first, ag_data(x), sizeof first);
    cr_assert_not(nn_batches_next(it, &x, NULL));
    cr_assert(nn_batches_next(it, &x, NULL));
    cr_expect_neq(memcmp(first, ag_data(x), sizeof first), 0);
    nn_batches_free(it);
    ag_tensor_free(bx);
    ag_tensor_free(by);
    nn_dataset_free(&d);
}

Test(nn_data, batches_reject_mismatched_tensors)
{
    nn_dataset d = numbered(10);
    ag_tensor *bx = ag_zeros(AG_F64, AG_SHAPE(4, 2)), *by = ag_zeros(AG_F64, AG_SHAPE(4));
    ag_tensor *wide = ag_zeros(AG_F64, AG_SHAPE(4, 3)), *f32 = ag_zeros(AG_F32, AG_SHAPE(4, 2));
    ag_tensor *by3 = ag_zeros(AG_F64, AG_SHAPE(3));
    nn_batches *it = (nn_batches *)&it;
    nn_error e;
    cr_expect_eq(nn_batches_new(d.x, d.labels, wide, by, true, 1, &it, &e), AG_ERR_SHAPE);
    cr_expect(strstr(e.msg, "x [10,2] and its batch [4,3]"), "%s", e.msg);
    cr_expect_null(it);
    cr_expect_eq(nn_batches_new(d.x, d.labels, f32, by, true, 1, &it, &e), AG_ERR_DTYPE);
    cr_expect_eq(nn_batches_new(d.x, d.labels, bx, by3, true, 1, &it, &e), AG_ERR_SHAPE);
    cr_expect_eq(nn_batches_new(d.x, bx, bx, by, true, 1, &it, &e), AG_ERR_SHAPE);
    cr_expect_eq(nn_batches_new(d.x, NULL, bx, by, true, 1, &it, &e), AG_ERR_NULL);
    cr_expect_not(nn_batches_next(NULL, NULL, NULL));
    cr_expect_eq(nn_batches_per_epoch(NULL), 0);
    nn_batches_free(NULL);
    ag_tensor *all[] = {bx, by, wide, f32, by3};
    for (size_t i = 0; i < 5; i++)
        ag_tensor_free(all[i]);
    nn_dataset_free(&d);
}

/* ------------------------------------------------------------ scaling */

Test(nn_data, scale_and_standardize)
{
    ag_tensor *tr = ag_from_data(AG_F64, AG_SHAPE(3, 2), (double[]){1, 5, 2, 5, 3, 5});
    ag_tensor *te = ag_from_data(AG_F64, AG_SHAPE(1, 2), (double[]){4, 7});
    nn_error e;
    cr_assert_eq(nn_standardize(tr, te, &e), AG_OK, "%s", e.msg);
    double sd = sqrt(2.0 / 3); /* population sd of 1, 2, 3 */
    cr_expect_float_eq(ag_get(tr, 0), -1 / sd, 1e-15);
    cr_expect_float_eq(ag_get(tr, 2), 0, 1e-15);
    cr_expect_float_eq(ag_get(tr, 4), 1 / sd, 1e-15);
    cr_expect_eq(ag_get(tr, 1), 0, "a constant column is centred only");
    cr_expect_float_eq(ag_get(te, 0), 2 / sd, 1e-15, "test uses train's statistics");
    cr_expect_eq(ag_get(te, 1), 2);
    ag_tensor *three = ag_zeros(AG_F64, AG_SHAPE(1, 3));
    cr_expect_eq(nn_standardize(tr, three, &e), AG_ERR_SHAPE);
    cr_expect_eq(nn_standardize(te, NULL, &e), AG_OK, "one row: all constant");
    ag_tensor *v = ag_zeros(AG_F64, AG_SHAPE(3));
    cr_expect_eq(nn_standardize(v, NULL, &e), AG_ERR_SHAPE);
    ag_tensor *px = ag_from_data(AG_F32, AG_SHAPE(2, 2), (float[]){0, 8, -16, 4});
    cr_expect_eq(nn_max_abs(px), 16);
    cr_expect_eq(nn_scale(px, 1.0 / 16, &e), AG_OK);
    cr_expect_eq(ag_get(px, 1), 0.5);
    cr_expect_eq(ag_get(px, 2), -1);
    cr_expect_eq(nn_scale(px, NAN, &e), AG_ERR_VALUE);
    cr_expect_eq(nn_scale(NULL, 2, &e), AG_ERR_NULL);
    cr_expect_eq(nn_max_abs(NULL), 0);
    ag_tensor *all[] = {tr, te, three, v, px};
    for (size_t i = 0; i < 5; i++)
        ag_tensor_free(all[i]);
}

/* ----------------------------------------------------------- accuracy */

Test(nn_data, accuracy_by_argmax)
{
    ag_tensor *out = ag_from_data(AG_F64, AG_SHAPE(4, 3),
                                  (double[]){0.1, 0.7, 0.2, 0.9, 0.05, 0.05, 0.3, 0.3, 0.4, 0.5, 0.5, 0});
    ag_tensor *lab = ag_from_data(AG_F64, AG_SHAPE(4), (double[]){1, 0, 1, 0});
    ag_tensor *hot = ag_from_data(AG_F64, AG_SHAPE(4, 3),
                                  (double[]){0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0});
    double acc = -1;
    nn_error e;
    cr_assert_eq(nn_accuracy(out, lab, 0.5, &acc, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(acc, 0.75, "rows 0, 1 right; row 2 wrong; row 3 a tie goes to the first");
    cr_assert_eq(nn_accuracy(out, hot, 0.5, &acc, &e), AG_OK);
    cr_expect_eq(acc, 0.75);
    cr_assert_eq(nn_accuracy(out, lab, NAN, &acc, &e), AG_OK, "the threshold is unused for C > 1");
    cr_expect_eq(acc, 0.75);
    ag_tensor *p = ag_from_data(AG_F64, AG_SHAPE(4, 1), (double[]){0.2, 0.6, 0.5, 0.49});
    ag_tensor *t = ag_from_data(AG_F64, AG_SHAPE(4), (double[]){0, 1, 0, 0});
    cr_assert_eq(nn_accuracy(p, t, 0.5, &acc, &e), AG_OK);
    cr_expect_eq(acc, 0.75, "one output: class = (p >= 0.5)");
    cr_expect_eq(nn_accuracy(out, t, 0.5, &acc, &e), AG_OK);
    cr_expect_eq(nn_accuracy(out, p, 0.5, &acc, &e), AG_ERR_SHAPE);
    cr_expect(strstr(e.msg, "outputs [4,3] and targets [4,1]"), "%s", e.msg);
    ag_tensor *short_lab = ag_zeros(AG_F64, AG_SHAPE(3));
    cr_expect_eq(nn_accuracy(out, short_lab, 0.5, &acc, &e), AG_ERR_SHAPE);
    cr_expect_eq(nn_accuracy(out, NULL, 0.5, &acc, &e), AG_ERR_NULL);
    cr_expect_eq(nn_accuracy(p, t, NAN, &acc, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "nn_accuracy: threshold nan is not finite"), "%s", e.msg);
    ag_tensor *all[] = {out, lab, hot, p, t, short_lab};
    for (size_t i = 0; i < 6; i++)
        ag_tensor_free(all[i]);
}

Test(nn_data, accuracy_of_one_output_at_a_threshold)
{
    /* Logits z = (0.3, 0.1, -0.2, 0.7) against classes (1, 1, 0, 1): read as
     * logits (class 1 when z >= 0, i.e. sigmoid(z) >= 0.5) all four are
     * right; read as probabilities (z >= 0.5) only rows 2 and 3 are. The
     * targets as 0/1 rows [4, 1] give the same answers. */
    ag_tensor *z = ag_from_data(AG_F64, AG_SHAPE(4, 1), (double[]){0.3, 0.1, -0.2, 0.7});
    ag_tensor *c = ag_from_data(AG_F64, AG_SHAPE(4), (double[]){1, 1, 0, 1});
    ag_tensor *rows = ag_from_data(AG_F64, AG_SHAPE(4, 1), (double[]){1, 1, 0, 1});
    double acc = -1;
    nn_error e;
    cr_assert_eq(nn_accuracy(z, c, 0, &acc, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(acc, 1.0);
    cr_assert_eq(nn_accuracy(z, c, 0.5, &acc, &e), AG_OK);
    cr_expect_eq(acc, 0.5);
    cr_assert_eq(nn_accuracy(z, rows, 0, &acc, &e), AG_OK);
    cr_expect_eq(acc, 1.0, "0/1 target rows are read at 0.5 whatever the output's threshold");
    cr_assert_eq(nn_accuracy(z, rows, 0.5, &acc, &e), AG_OK);
    cr_expect_eq(acc, 0.5);
    ag_tensor_free(z);
    ag_tensor_free(c);
    ag_tensor_free(rows);
}

/* A FIFO (or a device) is refused at once: a loader never blocks waiting
 * for a writer. */
Test(nn_data, loaders_refuse_a_fifo_without_blocking)
{
    char path[] = "/tmp/nn-fifo-XXXXXX";
    cr_assert_not_null(mkdtemp(path));
    char fifo[64];
    snprintf(fifo, sizeof fifo, "%s/f", path);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    nn_dataset d = {0};
    nn_error e;
    cr_expect_eq(nn_csv_load(fifo, AG_F32, &d, &e), AG_ERR_IO);
    cr_expect(strstr(e.msg, "is a FIFO, not a regular file"), "%s", e.msg);
    cr_expect_eq(nn_idx_load(fifo, fifo, AG_F32, &d, &e), AG_ERR_IO);
    cr_expect(strstr(e.msg, "is a FIFO"), "%s", e.msg);
    cr_expect_eq(nn_csv_load("/dev/null", AG_F32, &d, &e), AG_ERR_IO);
    cr_expect(strstr(e.msg, "a character device"), "%s", e.msg);
    unlink(fifo);
    rmdir(path);
}
