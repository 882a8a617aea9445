/* The limit of W1 (bench/WORKLOAD.md): OpenBLAS sgemm GFLOP/s on 1024^3 and on every product of
 * one W1 training step (forward and backward of the two 256-128 towers and of the
 * in-batch logits), at 2 threads (each product split over both) and as two
 * single-threaded streams side by side (one per core, each doing half of the products,
 * as the query and item towers can). Prints one JSON line per figure, then the FLOPs per
 * W1 example and the sgemm-bound W1 rate.
 *   build/bench/sgemm_limit [threads] */
#ifndef _GNU_SOURCE /* the Makefile defines it too */
#define _GNU_SOURCE
#endif
#include <cblas.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct shape {
    const char *name;
    bool ta, tb;
    int m, n, k;
} shape;

/* One W1 step, batch 1024: the query tower 257-256-128, the item tower 193-256-128,
 * logits 1024 x 1024 over 128, in the order forward then backward. */
static const shape W1[] = {
    { "q_dense0_fwd", 0, 0, 1024, 256, 257 }, { "q_dense1_fwd", 0, 0, 1024, 128, 256 },
    { "i_dense0_fwd", 0, 0, 1024, 256, 193 }, { "i_dense1_fwd", 0, 0, 1024, 128, 256 },
    { "logits_fwd", 0, 1, 1024, 1024, 128 },  { "logits_dq", 0, 0, 1024, 128, 1024 },
    { "logits_dc", 1, 0, 1024, 128, 1024 },   { "q_dense1_dx", 0, 1, 1024, 256, 128 },
    { "q_dense1_dw", 1, 0, 256, 128, 1024 },  { "q_dense0_dx", 0, 1, 1024, 257, 256 },
    { "q_dense0_dw", 1, 0, 257, 256, 1024 },  { "i_dense1_dx", 0, 1, 1024, 256, 128 },
    { "i_dense1_dw", 1, 0, 256, 128, 1024 },  { "i_dense0_dx", 0, 1, 1024, 193, 256 },
    { "i_dense0_dw", 1, 0, 193, 256, 1024 },
};
#define NW1 (int)(sizeof W1 / sizeof W1[0])

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct bufs {
    float *a, *b, *c;
} bufs;

static bufs make_bufs(void) {
    size_t n = 1024 * 1024;
    bufs x = { malloc(n * 4), malloc(n * 4), malloc(n * 4) };
    for (size_t i = 0; i < n; i++) {
        x.a[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        x.b[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
        x.c[i] = 0.0f;
    }
    return x;
}

static void run(const shape *s, const bufs *x) {
    int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->m, s->n, s->k,
                1.0f, x->a, lda, x->b, ldb, 0.0f, x->c, s->n);
}

static double flops(const shape *s) { return 2.0 * s->m * s->n * s->k; }

/* Seconds per call of one shape, the best of `reps` timed batches. */
static double time_shape(const shape *s, const bufs *x, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        int calls = 0;
        double t0 = now(), t;
        do {
            run(s, x);
            calls++;
            t = now() - t0;
        } while (t < 0.05);
        if (t / calls < best) best = t / calls;
    }
    return best;
}

/* Two single-threaded streams side by side: stream 0 runs the query tower's products
 * and dq, stream 1 the item tower's and dc; each computes half the rows of the logits. */
static const int SIDE[2][8] = { { 0, 1, 4, 5, 7, 8, 9, 10 }, { 2, 3, 4, 6, 11, 12, 13, 14 } };

typedef struct stream {
    int side, reps;
    bufs x;
    pthread_barrier_t *bar;
    double seconds;
} stream;

static void *stream_main(void *arg) {
    stream *st = arg;
    pthread_barrier_wait(st->bar);
    double t0 = now();
    for (int r = 0; r < st->reps; r++)
        for (int j = 0; j < 8; j++) {
            shape s = W1[SIDE[st->side][j]];
            if (SIDE[st->side][j] == 4) s.m /= 2;
            run(&s, &st->x);
        }
    st->seconds = now() - t0;
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    printf("# openblas kernel %s\n", openblas_get_corename());
    bufs x = make_bufs();
    openblas_set_num_threads(threads);
    shape big = { "1024^3", 0, 0, 1024, 1024, 1024 };
    for (int i = 0; i < 3; i++) run(&big, &x); /* warm-up */
    double t = time_shape(&big, &x, 5);
    printf("{\"workload\": \"limit\", \"system\": \"openblas\", \"figure\": \"sgemm_1024^3\", \"unit\": \"GFLOP/s\", "
           "\"median\": %.1f, \"threads\": %d}\n",
           flops(&big) / t / 1e9, threads);
    double total_flops = 0, total_time = 0;
    for (int i = 0; i < NW1; i++) {
        double ts = time_shape(&W1[i], &x, 5);
        total_flops += flops(&W1[i]);
        total_time += ts;
        printf("{\"workload\": \"limit\", \"system\": \"openblas\", \"figure\": \"sgemm_%s\", \"unit\": \"GFLOP/s\", "
               "\"median\": %.1f, \"m\": %d, \"n\": %d, \"k\": %d, \"threads\": %d}\n",
               W1[i].name, flops(&W1[i]) / ts / 1e9, W1[i].m, W1[i].n, W1[i].k, threads);
    }
    double rate = total_flops / total_time;
    printf(
        "{\"workload\": \"limit\", \"system\": \"openblas\", \"figure\": \"w1_flops_per_example\", \"unit\": \"FLOP\", "
        "\"median\": %.0f, \"per_step_gflop\": %.3f}\n",
        total_flops / 1024, total_flops / 1e9);
    printf(
        "{\"workload\": \"limit\", \"system\": \"openblas\", \"figure\": \"sgemm_w1_shapes\", \"unit\": \"GFLOP/s\", "
        "\"median\": %.1f, \"threads\": %d}\n",
        rate / 1e9, threads);
    printf("{\"workload\": \"W1\", \"system\": \"sgemm_bound\", \"figure\": \"train\", \"unit\": \"examples/s\", "
           "\"median\": %.0f, \"threads\": %d}\n",
           1024.0 / total_time, threads);

    /* two single-threaded streams side by side: the best of 3 trials of 40 steps */
    openblas_set_num_threads(1);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    int reps = 40;
    double best = 1e30;
    for (int trial = 0; trial < 3; trial++) {
        stream st[2];
        pthread_t th[2];
        for (int s = 0; s < 2; s++) {
            st[s] = (stream){ s, reps, make_bufs(), &bar, 0 };
            pthread_create(&th[s], NULL, stream_main, &st[s]);
        }
        for (int s = 0; s < 2; s++) pthread_join(th[s], NULL);
        double t2 = st[0].seconds > st[1].seconds ? st[0].seconds : st[1].seconds;
        if (t2 / reps < best) best = t2 / reps;
        for (int s = 0; s < 2; s++) {
            free(st[s].x.a);
            free(st[s].x.b);
            free(st[s].x.c);
        }
    }
    printf("{\"workload\": \"limit\", \"system\": \"openblas\", \"figure\": \"sgemm_w1_shapes_two_streams\", "
           "\"unit\": \"GFLOP/s\", \"median\": %.1f, \"threads\": \"2 x 1\"}\n",
           total_flops / best / 1e9);
    printf("{\"workload\": \"W1\", \"system\": \"sgemm_bound_two_streams\", \"figure\": \"train\", \"unit\": "
           "\"examples/s\", \"median\": %.0f, \"threads\": \"2 x 1\"}\n",
           1024.0 / best);
    return 0;
}
