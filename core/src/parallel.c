/* The core's one thread policy: a process-wide pool of worker threads that runs every
 * parallel part of towerkit (the two-tower trainer's phases, the item export's batches,
 * top-k's query blocks, the row blocks of a large matrix product), and single-threaded
 * BLAS everywhere.
 *
 * Every matrix product towerkit makes is a single-threaded sgemm on the thread that needs
 * it. OpenBLAS's own thread count is set to 1 once, the first time towerkit is asked for
 * or told a thread count, and is never changed while anything runs: OpenBLAS's thread
 * count is process-wide, so switching it around a call races with every other thread
 * that uses BLAS. On the shapes towerkit runs (batches of a few hundred to a few thousand
 * rows, layers of 64 to 1024), one product split by OpenBLAS over two cores ran at about
 * half the rate of two single-threaded products side by side.
 *
 * tk_set_num_threads(n) sets how many threads a parallel call may use: the caller and up
 * to n - 1 workers. The default is the number of online CPUs.
 *
 * A parallel call posts a job of `ntasks` tasks; the caller and idle workers (at most
 * threads - 1 of them) take tasks by an atomic counter until none is left, and the caller
 * returns when every task has finished. Several host threads may post jobs at once, and a
 * task may post a job of its own: a thread waiting for its job waits only for tasks that
 * other threads are running, so nothing deadlocks; when every worker is busy elsewhere,
 * the caller runs its whole job itself.
 *
 * Determinism is the callers' part: a task's arithmetic must depend on its index alone,
 * not on the thread that runs it or on timing. Then results are the same bits on every
 * run for a given thread count (callers may let the number of tasks depend on it). */
#include "internal.h"

#include <pthread.h>
#include <unistd.h>

#include <cblas.h>

/* OpenBLAS's thread setter is not in cblas.h. */
extern void openblas_set_num_threads(int num_threads);

#define MAX_THREADS 1024

typedef struct job {
    tk_task_fn fn;
    void *arg;
    int64_t ntasks;
    int64_t next;     /* the next task to take (atomic) */
    int helpers;      /* workers that joined (under the pool's lock) */
    int max_helpers;  /* threads - 1 */
    int active;       /* workers still inside the job (under the lock) */
    struct job *link; /* the pool's list of jobs open to helpers */
} job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t posted;   /* a job was posted */
    pthread_cond_t finished; /* a worker left a job */
    job *open;               /* jobs with tasks to take and room for helpers */
    int nworkers;
    int idle;    /* workers waiting for a job (under the lock) */
    int threads; /* tk_set_num_threads; 0 until set or read */
} pool = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0 };

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_single(void) { openblas_set_num_threads(1); }

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

void tk_set_num_threads(int n) {
    pthread_once(&blas_once, blas_single);
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    __atomic_store_n(&pool.threads, n, __ATOMIC_RELAXED);
}

int tk_get_num_threads(void) {
    pthread_once(&blas_once, blas_single);
    int n = __atomic_load_n(&pool.threads, __ATOMIC_RELAXED);
    return n > 0 ? n : online_cpus();
}

/* Takes and runs tasks of j until none is left; `slot` is the taker's place in the job. */
static void run_tasks(job *j, int slot) {
    for (;;) {
        int64_t t = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (t >= j->ntasks) return;
        j->fn(j->arg, t, slot);
    }
}

/* Removes j from the open list (under the lock) if it is there. */
static void close_job(job *j) {
    for (job **p = &pool.open; *p; p = &(*p)->link)
        if (*p == j) {
            *p = j->link;
            return;
        }
}

/* The first open job with room for a helper (under the lock); full or drained jobs are
 * closed on the way. */
static job *take_job(void) {
    while (pool.open) {
        job *j = pool.open;
        if (j->helpers < j->max_helpers && __atomic_load_n(&j->next, __ATOMIC_RELAXED) < j->ntasks) return j;
        pool.open = j->link;
    }
    return NULL;
}

static void *worker_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        job *j = take_job();
        if (!j) {
            pool.idle++;
            pthread_cond_wait(&pool.posted, &pool.mu);
            pool.idle--;
            continue;
        }
        int slot = ++j->helpers;
        j->active++;
        if (j->helpers == j->max_helpers) close_job(j);
        pthread_mutex_unlock(&pool.mu);
        run_tasks(j, slot);
        pthread_mutex_lock(&pool.mu);
        if (--j->active == 0) pthread_cond_broadcast(&pool.finished);
    }
    return NULL;
}

/* Starts workers until there are `want` (under the lock); fewer if the system refuses. */
static void grow_pool(int want) {
    while (pool.nworkers < want) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) return; /* the jobs run on the threads there are */
        pool.nworkers++;
    }
}

void tk_parallel_run(int64_t ntasks, int threads, tk_task_fn fn, void *arg) {
    if (ntasks <= 0) return;
    if (threads <= 0) threads = tk_get_num_threads();
    if (threads > ntasks) threads = (int)(ntasks < MAX_THREADS ? ntasks : MAX_THREADS);
    job j = { fn, arg, ntasks, 0, 0, threads - 1, 0, NULL };
    if (threads > 1) {
        pthread_mutex_lock(&pool.mu);
        grow_pool(threads - 1);
        j.link = pool.open;
        pool.open = &j;
        /* wake as many idle workers as the job takes, not all: the others would find it
         * full and sleep again (the caller runs tasks too, so a missed helper only slows) */
        for (int w = pool.idle < j.max_helpers ? pool.idle : j.max_helpers; w > 0; w--)
            pthread_cond_signal(&pool.posted);
        pthread_mutex_unlock(&pool.mu);
    }
    run_tasks(&j, 0);
    if (threads <= 1) return;
    /* Every task is taken: wait for the helpers still running theirs. */
    pthread_mutex_lock(&pool.mu);
    close_job(&j);
    while (j.active > 0) pthread_cond_wait(&pool.finished, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
}

void tk_split_range(int64_t n, int64_t parts, int64_t i, int64_t align, int64_t *lo, int64_t *hi) {
    if (align < 1) align = 1;
    int64_t units = (n + align - 1) / align; /* whole aligned blocks, the last one short */
    int64_t a = units * i / parts, b = units * (i + 1) / parts;
    *lo = a * align < n ? a * align : n;
    *hi = b * align < n ? b * align : n;
}
