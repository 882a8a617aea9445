/* The streaming frequency estimator (Yi et al. 2019): known frequencies, the initial
 * estimate, repeated ids, collisions and bad arguments. */
#include "tk_test.h"

/* Feeds steps in which id 1 appears every step, id 2 every 4th and id 3 every 10th; the
 * gaps are exact, so the moving averages converge to 1, 4 and 10. */
static void test_known_frequencies(void) {
    tk_freq_estimator *est = tk_freq_estimator_new(1 << 12, 0.05f);
    TK_CHECK(est != NULL);
    if (!est) return;
    int64_t ids[3];
    float logq[3];
    for (int64_t t = 0; t < 4000; t++) {
        int n = 0;
        ids[n++] = 1;
        if (t % 4 == 0) ids[n++] = 2;
        if (t % 10 == 0) ids[n++] = 3;
        TK_CHECK(tk_freq_estimator_update(est, n, ids, logq) == TK_OK);
    }
    TK_CHECK(tk_freq_estimator_step(est) == 4000);
    int64_t q[3] = { 1, 2, 3 };
    tk_freq_estimator_logq(est, 3, q, logq);
    TK_CHECK_NEAR(expf(logq[0]), 1.0, 1e-3);
    TK_CHECK_NEAR(expf(logq[1]), 0.25, 0.25 * 1e-3);
    TK_CHECK_NEAR(expf(logq[2]), 0.1, 0.1 * 1e-2);
    tk_freq_estimator_free(est);
}

/* Random sightings: id k appears at each step with probability p_k; the estimates
 * follow within the noise of a moving average of rate alpha. */
static void test_random_frequencies(void) {
    const double p[4] = { 0.9, 0.5, 0.2, 0.05 };
    tk_freq_estimator *est = tk_freq_estimator_new(1000, 0.01f);
    uint64_t s = 12345;
    double sum[4] = { 0 };
    int samples = 0;
    for (int64_t t = 0; t < 30000; t++) {
        int64_t ids[4];
        int n = 0;
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((double)(s >> 11) / 9007199254740992.0 < p[k]) ids[n++] = 100 + k;
        }
        tk_freq_estimator_update(est, n, ids, NULL);
        if (t >= 10000 && t % 100 == 0) { /* average the estimate over the second part */
            int64_t q[4] = { 100, 101, 102, 103 };
            float lq[4];
            tk_freq_estimator_logq(est, 4, q, lq);
            for (int k = 0; k < 4; k++) sum[k] += 1.0 / expf(lq[k]); /* the gap estimate B */
            samples++;
        }
    }
    for (int k = 0; k < 4; k++) { /* the mean gap of a Bernoulli(p) process is 1 / p */
        double gap = sum[k] / samples;
        TK_CHECK_MSG(fabs(gap * p[k] - 1.0) < 0.1, "id %d: mean gap %g, expected %g", k, gap, 1.0 / p[k]);
    }
    tk_freq_estimator_free(est);
}

/* A never-seen id: p = alpha (B starts at 1 / alpha). Its first sighting changes nothing
 * but A; the second records the gap. logq_out is the estimate before the step. */
static void test_initial_estimate_and_order(void) {
    tk_freq_estimator *est = tk_freq_estimator_new(1 << 16, 0.25f);
    int64_t id = 42, other = 7;
    float lq;
    tk_freq_estimator_logq(est, 1, &id, &lq);
    TK_CHECK_NEAR(lq, logf(0.25f), 1e-6);
    TK_CHECK(tk_freq_estimator_update(est, 1, &id, &lq) == TK_OK); /* step 0: first sighting */
    TK_CHECK_NEAR(lq, logf(0.25f), 1e-6);
    tk_freq_estimator_logq(est, 1, &id, &lq);
    TK_CHECK_NEAR(lq, logf(0.25f), 1e-6);                              /* B unchanged: 4 */
    TK_CHECK(tk_freq_estimator_update(est, 1, &other, NULL) == TK_OK); /* step 1 */
    TK_CHECK(tk_freq_estimator_update(est, 1, &id, &lq) == TK_OK);     /* step 2: gap 2 */
    TK_CHECK_NEAR(lq, logf(0.25f), 1e-6);                              /* before the update */
    tk_freq_estimator_logq(est, 1, &id, &lq);
    TK_CHECK_NEAR(lq, -logf(0.75f * 4.0f + 0.25f * 2.0f), 1e-6); /* B = 3.5 */
    TK_CHECK(tk_freq_estimator_step(est) == 3);
    /* a repeated id: every position gets the estimate before the step, and each occurrence
     * updates in order (the second records a gap of 0) */
    int64_t twice[3] = { id, other, id };
    float out[3];
    TK_CHECK(tk_freq_estimator_update(est, 3, twice, out) == TK_OK); /* step 3 */
    TK_CHECK_NEAR(out[0], -logf(3.5f), 1e-6);
    TK_CHECK_NEAR(out[2], -logf(3.5f), 1e-6);
    TK_CHECK_NEAR(out[1], -logf(4.0f), 1e-6);                /* other: seen once, B still 1 / alpha */
    float b1 = 0.75f * 3.5f + 0.25f * 1.0f, b2 = 0.75f * b1; /* gap 1, then gap 0 */
    tk_freq_estimator_logq(est, 1, &id, &lq);
    TK_CHECK_NEAR(lq, -logf(b2), 1e-6);
    /* an empty step still counts */
    TK_CHECK(tk_freq_estimator_update(est, 0, NULL, NULL) == TK_OK);
    TK_CHECK(tk_freq_estimator_step(est) == 5);
    tk_freq_estimator_free(est);
}

/* More ids than buckets: slots are shared, every estimate stays finite and the busier
 * slots get higher probabilities. Many repeats within steps stay finite too. */
static void test_collisions_and_repeats(void) {
    tk_freq_estimator *est = tk_freq_estimator_new(3, 0.1f);
    int64_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = i * 7919;
    float lq[100];
    for (int t = 0; t < 200; t++) TK_CHECK(tk_freq_estimator_update(est, 100, ids, lq) == TK_OK);
    tk_freq_estimator_logq(est, 100, ids, lq);
    for (int i = 0; i < 100; i++) TK_CHECK(isfinite(lq[i]));
    /* a single bucket: everything collides */
    tk_freq_estimator *one = tk_freq_estimator_new(1, 1.0f);
    int64_t same[1000];
    for (int i = 0; i < 1000; i++) same[i] = 5;
    for (int t = 0; t < 50; t++) TK_CHECK(tk_freq_estimator_update(one, 1000, same, NULL) == TK_OK);
    tk_freq_estimator_logq(one, 1, same, lq);
    TK_CHECK(isfinite(lq[0]));
    TK_CHECK(lq[0] > 0.0f); /* many sightings per step: p > 1 */
    /* negative and huge ids hash like any other */
    int64_t odd[3] = { -1, INT64_MIN, INT64_MAX };
    TK_CHECK(tk_freq_estimator_update(est, 3, odd, lq) == TK_OK);
    for (int i = 0; i < 3; i++) TK_CHECK(isfinite(lq[i]));
    tk_freq_estimator_free(one);
    tk_freq_estimator_free(est);
}

static void test_bad_arguments(void) {
    TK_CHECK(tk_freq_estimator_new(0, 0.1f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "buckets must be >= 1, got 0");
    TK_CHECK(tk_freq_estimator_new(-5, 0.1f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "buckets must be >= 1, got -5");
    TK_CHECK(tk_freq_estimator_new(10, 0.0f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "alpha must be in (0, 1], got 0");
    TK_CHECK(tk_freq_estimator_new(10, 1.5f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "alpha must be in (0, 1], got 1.5");
    TK_CHECK(tk_freq_estimator_new(10, -0.1f) == NULL);
    TK_CHECK(tk_freq_estimator_new(10, NAN) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "alpha must be in (0, 1], got nan");
    TK_CHECK(tk_freq_estimator_new(INT64_MAX, 0.5f) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "do not fit in memory");
    tk_freq_estimator *ok = tk_freq_estimator_new(1, 1.0f); /* the extremes are valid */
    TK_CHECK(ok != NULL);
    int64_t id = 3;
    TK_CHECK(tk_freq_estimator_update(NULL, 1, &id, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "estimator is NULL");
    TK_CHECK(tk_freq_estimator_update(ok, -1, &id, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "n must be >= 0, got -1");
    TK_CHECK(tk_freq_estimator_update(ok, 2, NULL, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "ids is NULL but n is 2");
    TK_CHECK(tk_freq_estimator_step(ok) == 0);  /* failed calls are not steps */
    tk_freq_estimator_logq(NULL, 1, &id, NULL); /* ignored */
    tk_freq_estimator_free(ok);
    tk_freq_estimator_free(NULL);
}

int main(void) {
    TK_RUN(test_known_frequencies);
    TK_RUN(test_random_frequencies);
    TK_RUN(test_initial_estimate_and_order);
    TK_RUN(test_collisions_and_repeats);
    TK_RUN(test_bad_arguments);
    return tk_test_summary();
}
