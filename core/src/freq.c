/* Streaming item-frequency estimation: Yi et al. 2019, "Sampling-Bias-Corrected Neural
 * Modeling for Large Corpus Item Recommendations", algorithm 2.
 *
 * Each id is hashed (splitmix64's finaliser, then mod buckets) to a slot holding
 *   A: the step the slot was last seen at (-1: never),
 *   B: a moving average, learning rate alpha, of the gap in steps between sightings.
 * Step t (0, 1, ... one per update call) records each id in order:
 *   if A >= 0:  B = (1 - alpha) B + alpha (t - A)
 *   A = t
 * and the estimated sampling probability is p = 1 / B (sightings per step).
 *
 * Choices the paper leaves open:
 * - Initial B = 1 / alpha for every slot, so a never-seen id has p = alpha: small but
 *   finite (a log-probability of log(alpha), not -inf), and one whose gap turns out to
 *   be g moves from 1 / alpha towards g at rate alpha from its second sighting on. An id's
 *   first sighting only sets A: no gap is known yet.
 * - logq_out of an update call holds log(p) as estimated before that call's updates, for
 *   every position, so repeated ids of one step get one value.
 * - A repeated id counts once per occurrence, in order: its second occurrence in a step
 *   records a gap of 0, which raises its p (p estimates sightings per step and may exceed
 *   1 for an id that appears several times per step).
 * - Ids sharing a slot (a collision) share the estimate, as in the paper.
 * - B is kept >= TK_FREQ_MIN_GAP so that log(p) stays finite however often an id repeats
 *   within steps (the gaps of 0 would otherwise drive B to 0).
 * Not thread-safe: one estimator is updated by one thread at a time. */
#include "internal.h"

#include <math.h>

#define TK_FREQ_MIN_GAP 1e-6f

struct tk_freq_estimator {
    int64_t buckets;
    float alpha;
    float initial_gap;
    int64_t step;
    int64_t *last; /* A */
    float *gap;    /* B */
};

static inline uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline int64_t slot_of(const tk_freq_estimator *est, int64_t id) {
    return (int64_t)(mix64((uint64_t)id) % (uint64_t)est->buckets);
}

tk_freq_estimator *tk_freq_estimator_new(int64_t buckets, float alpha) {
    if (buckets < 1) {
        tk_set_error("freq_estimator: buckets must be >= 1, got %lld", (long long)buckets);
        return NULL;
    }
    if (!(alpha > 0.0f && alpha <= 1.0f)) {
        tk_set_error("freq_estimator: alpha must be in (0, 1], got %g", (double)alpha);
        return NULL;
    }
    if ((uint64_t)buckets > SIZE_MAX / (sizeof(int64_t) + sizeof(float))) {
        tk_set_error("freq_estimator: %lld buckets do not fit in memory", (long long)buckets);
        return NULL;
    }
    tk_freq_estimator *est = calloc(1, sizeof *est);
    if (est) {
        est->last = malloc((size_t)buckets * sizeof *est->last);
        est->gap = malloc((size_t)buckets * sizeof *est->gap);
    }
    if (!est || !est->last || !est->gap) {
        tk_freq_estimator_free(est);
        tk_set_error("freq_estimator: out of memory for %lld buckets", (long long)buckets);
        return NULL;
    }
    est->buckets = buckets;
    est->alpha = alpha;
    est->initial_gap = 1.0f / alpha;
    for (int64_t i = 0; i < buckets; i++) {
        est->last[i] = -1;
        est->gap[i] = est->initial_gap;
    }
    return est;
}

void tk_freq_estimator_free(tk_freq_estimator *est) {
    if (!est) return;
    free(est->last);
    free(est->gap);
    free(est);
}

void tk_freq_estimator_logq(const tk_freq_estimator *est, int64_t n, const int64_t *ids, float *logq_out) {
    if (!est || n <= 0 || !ids || !logq_out) return;
    for (int64_t i = 0; i < n; i++) logq_out[i] = -logf(est->gap[slot_of(est, ids[i])]);
}

tk_status tk_freq_estimator_update(tk_freq_estimator *est, int64_t n, const int64_t *ids, float *logq_out) {
    if (!est) {
        tk_set_error("freq_estimator_update: estimator is NULL");
        return TK_ERROR;
    }
    if (n < 0) {
        tk_set_error("freq_estimator_update: n must be >= 0, got %lld", (long long)n);
        return TK_ERROR;
    }
    if (n > 0 && !ids) {
        tk_set_error("freq_estimator_update: ids is NULL but n is %lld", (long long)n);
        return TK_ERROR;
    }
    if (logq_out) tk_freq_estimator_logq(est, n, ids, logq_out); /* before this step's updates */
    int64_t t = est->step;
    float a = est->alpha;
    for (int64_t i = 0; i < n; i++) {
        int64_t s = slot_of(est, ids[i]);
        if (est->last[s] >= 0) {
            float g = (1.0f - a) * est->gap[s] + a * (float)(t - est->last[s]);
            est->gap[s] = g > TK_FREQ_MIN_GAP ? g : TK_FREQ_MIN_GAP;
        }
        est->last[s] = t;
    }
    est->step++;
    return TK_OK;
}

int64_t tk_freq_estimator_step(const tk_freq_estimator *est) { return est ? est->step : 0; }
