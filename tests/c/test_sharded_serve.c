/* Serving from a sharded catalogue (towerkit_dist.h: tk_sharded_serve_query, _stop,
 * _follow) in one process, without tk_dist_init: one rank, whose shard is the whole
 * catalogue. The multi-rank behaviour runs in tests/spec/sharded_server_spec.lua (the
 * server under mpirun -np 2). */
#include "tk_test.h"
#include "towerkit_dist.h"

enum { N = 300, D = 6, Q = 4, K = 5 };

typedef struct fixture {
    tk_tensor *ids, *emb, *q, *out_ids, *out_scores;
    tk_sharded_index *ix;
} fixture;

static void fixture_new(fixture *f) {
    int64_t se[2] = { N, D }, sq[2] = { Q, D }, si[1] = { N };
    f->emb = tk_test_randn(2, se, 1.0f, 3);
    f->q = tk_test_randn(2, sq, 1.0f, 4);
    f->ids = tk_tensor_new(TK_I64, 1, si);
    for (int64_t i = 0; i < N; i++) tk_i64(f->ids)[i] = (i * 37) % 1009; /* not the rows */
    f->out_ids = tk_tensor_new_2d(TK_I64, Q, K);
    f->out_scores = tk_tensor_new_2d(TK_F32, Q, K);
    f->ix = tk_sharded_index_new(f->ids, f->emb);
}

static void fixture_free(fixture *f) {
    tk_sharded_index_free(f->ix);
    tk_tensor *all[] = { f->ids, f->emb, f->q, f->out_ids, f->out_scores };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tk_tensor_release(all[i]);
}

/* One rank: the answer is tk_topk's on the catalogue (the same call on the same
 * tensors: the same bits), rows mapped to ids; exclusions by id. */
static void test_one_rank_is_topk(void) {
    fixture f;
    fixture_new(&f);
    TK_CHECK(f.ix != NULL);
    tk_tensor *idx = tk_tensor_new_2d(TK_I64, Q, K), *sc = tk_tensor_new_2d(TK_F32, Q, K);
    TK_CHECK(tk_topk(f.q, f.emb, K, NULL, NULL, idx, sc) == TK_OK);
    TK_CHECK(tk_sharded_serve_query(f.ix, f.q, K, NULL, NULL, f.out_ids, f.out_scores) == TK_OK);
    for (int64_t c = 0; c < Q * K; c++) {
        TK_CHECK(tk_i64(f.out_ids)[c] == tk_i64(f.ids)[tk_i64(idx)[c]]);
        TK_CHECK(memcmp(&tk_f32(f.out_scores)[c], &tk_f32(sc)[c], sizeof(float)) == 0);
    }
    /* query 1 excludes its two best ids and an id the catalogue lacks */
    int64_t off[Q + 1] = { 0, 0, 3, 3, 3 };
    int64_t ex[3] = { tk_i64(f.out_ids)[K], tk_i64(f.out_ids)[K + 1], 5000 };
    int64_t want2 = tk_i64(f.out_ids)[K + 2];
    TK_CHECK(tk_sharded_serve_query(f.ix, f.q, K, off, ex, f.out_ids, f.out_scores) == TK_OK);
    TK_CHECK(tk_i64(f.out_ids)[K] == want2);
    for (int64_t j = 0; j < K; j++) TK_CHECK(tk_i64(f.out_ids)[K + j] != ex[0] && tk_i64(f.out_ids)[K + j] != ex[1]);
    /* stop is nothing to do with one rank */
    TK_CHECK(tk_sharded_serve_stop(f.ix) == TK_OK);
    tk_tensor_release(idx);
    tk_tensor_release(sc);
    fixture_free(&f);
}

static void test_bad_arguments(void) {
    fixture f;
    fixture_new(&f);
    int64_t s5[2] = { Q, D + 1 };
    tk_tensor *wide = tk_tensor_new(TK_F32, 2, s5);
    TK_CHECK(tk_sharded_serve_query(f.ix, wide, K, NULL, NULL, f.out_ids, f.out_scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "queries float32 [Q >= 1, 6] expected, got float32 [4, 7]");
    TK_CHECK(tk_sharded_serve_query(f.ix, f.q, 0, NULL, NULL, f.out_ids, f.out_scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "k must be >= 1, got 0");
    TK_CHECK(tk_sharded_serve_query(f.ix, f.q, K + 1, NULL, NULL, f.out_ids, f.out_scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "out_ids int64 [4, 6] and out_scores float32 [4, 6] expected");
    int64_t from1[Q + 1] = { 1, 1, 1, 1, 1 }, down[Q + 1] = { 0, 2, 1, 1, 1 }, some[Q + 1] = { 0, 1, 1, 1, 1 };
    TK_CHECK(tk_sharded_serve_query(f.ix, f.q, K, from1, NULL, f.out_ids, f.out_scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "exclusion offsets must start at 0");
    int64_t ex[2] = { 1, 2 };
    TK_CHECK(tk_sharded_serve_query(f.ix, f.q, K, down, ex, f.out_ids, f.out_scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "exclusion offsets must not decrease (query 1)");
    TK_CHECK(tk_sharded_serve_query(f.ix, f.q, K, some, NULL, f.out_ids, f.out_scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "exclusion offsets without ids");
    TK_CHECK(tk_sharded_serve_query(NULL, f.q, K, NULL, NULL, f.out_ids, f.out_scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "NULL index");
    /* tk_sharded_index_query checks the same arguments the same way (one check_query) */
    TK_CHECK(tk_sharded_index_query(f.ix, f.q, K, from1, ex, f.out_ids, f.out_scores, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "sharded_index_query: exclusion offsets must start at 0");
    TK_CHECK(tk_sharded_index_query(f.ix, f.q, K, down, ex, f.out_ids, f.out_scores, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "sharded_index_query: exclusion offsets must not decrease (query 1)");
    TK_CHECK(tk_sharded_index_query(f.ix, f.q, K, some, NULL, f.out_ids, f.out_scores, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "sharded_index_query: exclusion offsets without ids");
    TK_CHECK(tk_sharded_index_query(f.ix, wide, K, NULL, NULL, f.out_ids, f.out_scores, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "sharded_index_query: queries float32 [Q, 6] expected, got float32 [4, 7]");
    TK_CHECK(tk_sharded_index_query(f.ix, f.q, K, NULL, NULL, f.out_ids, f.out_scores, f.out_scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "sharded_index_query: out_index int64 [4, 5] expected");
    /* a follower needs MPI and a rank other than 0 */
    TK_CHECK(tk_sharded_serve_follow(f.ix, 1e-3) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "only ranks other than 0 follow");
    /* the idle broadcast, as every collective, needs tk_dist_init (or says how to get MPI) */
    int64_t x = 0;
    TK_CHECK(tk_dist_bcast_idle(&x, TK_I64, 1, 0, 1e-3) == TK_ERROR);
    TK_CHECK(strstr(tk_last_error(), tk_dist_available() ? "before tk_dist_init" : "built without MPI") != NULL);
    tk_tensor_release(wide);
    fixture_free(&f);
}

int main(void) {
    TK_RUN(test_one_rank_is_topk);
    TK_RUN(test_bad_arguments);
    return tk_test_summary();
}
