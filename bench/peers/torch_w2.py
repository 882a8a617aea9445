"""W2 (bench/WORKLOAD.md) in PyTorch: the W1 item tower exports 200,000 items (forward in
no_grad mode plus the L2 norm, batches of 4096), then 10,000 query vectors (128-d,
L2-normalised) get their exact top-100 by inner product (matmul plus torch.topk over
blocks of queries). 2 threads; 1 warm-up, 3 runs; median and min-max."""
import sys
import time

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import THREADS, emit, peak_rss_mib, print_blas, zipf_ids  # noqa: E402
from torch_w1 import Tower  # noqa: E402

NI, NQ, K, D, RUNS = 200_000, 10_000, 100, 128, 3
EXPORT_BATCH, QUERY_BLOCK = 4096, 512


def main():
    torch.set_num_threads(THREADS)
    print_blas()
    torch.manual_seed(42)
    item = Tower([200_000, 1000, 5000], [], sparse=False).eval()
    rng = np.random.default_rng(3)
    ids = torch.arange(NI)
    cats = torch.from_numpy(zipf_ids(rng, 1000, NI))
    brands = torch.from_numpy(zipf_ids(rng, 5000, NI))
    prices = torch.from_numpy(rng.random(NI, dtype=np.float32))

    def export():
        with torch.no_grad():
            parts = [item([ids[a:a + EXPORT_BATCH], cats[a:a + EXPORT_BATCH], brands[a:a + EXPORT_BATCH]], [],
                          prices[a:a + EXPORT_BATCH]) for a in range(0, NI, EXPORT_BATCH)]
            return torch.cat(parts)

    export()
    rates = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        emb = export()
        rates.append(NI / (time.perf_counter() - t0))
    emit("W2", "pytorch", "item_export", "rows/s", rates, threads=THREADS, rows=NI, torch=torch.__version__)

    g = torch.Generator().manual_seed(11)
    queries = torch.nn.functional.normalize(torch.randn(NQ, D, generator=g), dim=1)

    def topk():
        with torch.no_grad():
            out = [torch.topk(queries[a:a + QUERY_BLOCK] @ emb.T, K, dim=1) for a in range(0, NQ, QUERY_BLOCK)]
            return torch.cat([o.indices for o in out]), torch.cat([o.values for o in out])

    topk()
    qps = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        idx, _ = topk()
        qps.append(NQ / (time.perf_counter() - t0))
    emit("W2", "pytorch", "topk", "queries/s", qps, threads=THREADS, queries=NQ, items=NI, k=K,
         query_block=QUERY_BLOCK)
    emit("W2", "pytorch", "peak_rss", "MiB", median=peak_rss_mib())


if __name__ == "__main__":
    main()
