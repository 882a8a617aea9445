"""Shared helpers of the peer benchmarks (bench/WORKLOAD.md): Zipf-like ids, statistics, JSON lines."""
import json
import os
import resource
import statistics
import sys

import numpy as np

THREADS = int(os.environ.get("TK_BENCH_THREADS", "2"))
B = 1024


def zipf_ids(rng, n, size, s=1.1):
    """Ranks in [0, n) with P(r) ~ 1 / (r + 1)^s, by inverse CDF (as bench/common.lua)."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64) ** s)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(size)), n - 1).astype(np.int64)


def w1_data(n, seed):
    """n W1 interactions as numpy arrays; the list feature as flat values and offsets."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 6, size=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lens)
    return {
        "user_id": zipf_ids(rng, 100_000, n),
        "user_country": zipf_ids(rng, 200, n),
        "user_age_bucket": zipf_ids(rng, 16, n),
        "user_recent_categories__values": zipf_ids(rng, 1000, int(offsets[-1])),
        "user_recent_categories__offsets": offsets,
        "user_activity": rng.random(n, dtype=np.float32),
        "item_id": zipf_ids(rng, 200_000, n),
        "item_category": zipf_ids(rng, 1000, n),
        "item_brand": zipf_ids(rng, 5000, n),
        "item_price": rng.random(n, dtype=np.float32),
    }


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def print_blas():
    """One line naming the OpenBLAS kernel this process runs (numpy, PyTorch and FAISS link
    the system's OpenBLAS), if an OpenBLAS is loaded: call it after importing them."""
    import ctypes

    with open("/proc/self/maps") as f:
        paths = sorted({line.split()[-1] for line in f if "openblas" in line and "/" in line})
    for path in paths:
        try:
            corename = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        corename.restype = ctypes.c_char_p
        print(f"# openblas kernel {corename().decode()} ({path})", flush=True)
        return


def emit(workload, system, figure, unit, values=None, median=None, **extra):
    out = {"workload": workload, "system": system, "figure": figure, "unit": unit}
    if values is not None:
        out.update(median=statistics.median(values), min=min(values), max=max(values), runs=values)
    else:
        out["median"] = median
    out.update(extra)
    print(json.dumps(out), flush=True)
