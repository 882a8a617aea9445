/* The worked example at the top of core/include/towerkit.h, compiled and run: it must
 * build with towerkit.h alone, train, and release everything it makes (make test-asan
 * runs it under LeakSanitizer). The text between the markers below is the header's,
 * line for line and indented by four spaces; the second test fails when they differ, so
 * edit both together. */
#include "tk_test.h"

/* The loss of the example's last step. */
static float run_example(void) {
    /* example: begin (the header's text, line for line: not formatted) */
    // clang-format off
    tk_tensor *x = tk_tensor_new_2d(TK_F32, 8, 4), *y = tk_tensor_new_2d(TK_F32, 8, 1);
    for (int i = 0; i < 32; i++) tk_f32(x)[i] = (float)(i % 5) - 2.0f;
    for (int i = 0; i < 8; i++) tk_f32(y)[i] = 0.5f * tk_f32(x)[4 * i] + 1.0f;
    tk_block *mlp = tk_sequential_new("mlp");
    tk_block *layers[2] = {
        tk_dense_new("dense_0", 0, 16, TK_ACT_RELU, true, tk_init_default_kernel(),
                     tk_init_zeros(), 1),
        tk_dense_new("dense_1", 0, 1, TK_ACT_LINEAR, true, tk_init_default_kernel(),
                     tk_init_zeros(), 2),
    };
    for (int i = 0; i < 2; i++) {
        tk_sequential_append(mlp, layers[i]);    // mlp retains the layer,
        tk_block_release(layers[i]);             // so ours goes
    }
    tk_optim *opt = tk_optim_adam_new(1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tk_ctx *ctx = tk_ctx_new(42);
    float last = NAN;
    for (int step = 0; step < 100; step++) {
        tk_ctx_reset(ctx);                       // frees the last step's intermediates
        tk_ctx_set_training(ctx, true);
        tk_value *out = tk_block_forward(ctx, mlp, tk_value_of(ctx, x));
        tk_tensor *loss = tk_mse_loss(ctx, tk_value_tensor(out), y);
        if (!loss || tk_backward(ctx, loss) != TK_OK) {
            fprintf(stderr, "%s\n", tk_ctx_error(ctx));
            break;
        }
        last = tk_f32(loss)[0];                  // loss lives in ctx until the reset
        tk_optim_step_block(opt, ctx, mlp);      // reads the gradients of ctx
    }
    tk_ctx_free(ctx);
    tk_optim_free(opt);
    tk_block_release(mlp);
    tk_tensor_release(x);
    tk_tensor_release(y);
    // clang-format on
    /* example: end */
    return last;
}

static void test_example_trains(void) {
    float last = run_example();
    TK_CHECK_MSG(last < 0.05f, "loss after 100 steps: %g", (double)last);
}

/* The example's lines in `path`: after the line holding `marker`, the first run of lines
 * that start with `prefix` (cut off), ending before a line holding `end` (if not NULL);
 * clang-format's on/off comments are skipped. */
static int example_lines(const char *path, const char *marker, const char *end, const char *prefix, char **out,
                         int max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    size_t plen = strlen(prefix);
    int n = 0;
    bool after = false;
    while (n < max && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!after) {
            after = strstr(line, marker) != NULL;
            continue;
        }
        if (strstr(line, "clang-format")) continue; /* the formatter's guards around the copy */
        bool code = strncmp(line, prefix, plen) == 0 && !(end && strstr(line, end));
        if (code)
            out[n++] = strdup(line + plen);
        else if (n > 0)
            break;
    }
    fclose(f);
    return n;
}

static void test_example_matches_header(void) {
    char *hdr[128], *here[128];
    int nh = example_lines(TK_ROOT_DIR "/core/include/towerkit.h", "A worked example", NULL, " *     ", hdr, 128);
    int nt = example_lines(TK_ROOT_DIR "/tests/c/test_header_example.c", "example: begin", "example: end", "    ", here,
                           128);
    TK_CHECK_MSG(nh > 10 && nt > 10, "example lines: %d in the header, %d here", nh, nt);
    for (int i = 0; i < nh && i < nt; i++)
        if (strcmp(hdr[i], here[i]) != 0) {
            TK_CHECK_MSG(false, "line %d of the example differs:\n      header: %s\n      test:   %s", i + 1, hdr[i],
                         here[i]);
            break;
        }
    TK_CHECK_MSG(nh == nt, "the example has %d lines in the header, %d here", nh, nt);
    for (int i = 0; i < nh; i++) free(hdr[i]);
    for (int i = 0; i < nt; i++) free(here[i]);
}

int main(void) {
    TK_RUN(test_example_trains);
    TK_RUN(test_example_matches_header);
    return tk_test_summary();
}
