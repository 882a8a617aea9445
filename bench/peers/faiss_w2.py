"""W2 (bench/WORKLOAD.md) top-100 in FAISS: IndexFlatIP (exact inner product) over 200,000
L2-normalised 128-d items, 10,000 queries, k = 100, 2 threads; 1 warm-up, 3 runs.
The item matrix is random (FAISS has no tower to export with); only search is timed."""
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import THREADS, emit, peak_rss_mib, print_blas  # noqa: E402

NI, NQ, K, D, RUNS = 200_000, 10_000, 100, 128, 3


def normalized(rng, n):
    x = rng.standard_normal((n, D), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main():
    faiss.omp_set_num_threads(THREADS)
    print_blas()
    rng = np.random.default_rng(5)
    items, queries = normalized(rng, NI), normalized(rng, NQ)
    index = faiss.IndexFlatIP(D)
    index.add(items)
    index.search(queries[:1000], K)
    qps = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        index.search(queries, K)
        qps.append(NQ / (time.perf_counter() - t0))
    emit("W2", "faiss", "topk", "queries/s", qps, threads=THREADS, queries=NQ, items=NI, k=K,
         index="IndexFlatIP")
    emit("W2", "faiss", "peak_rss", "MiB", median=peak_rss_mib())


if __name__ == "__main__":
    main()
