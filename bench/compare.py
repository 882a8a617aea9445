"""`make bench-compare`: runs towerkit's benchmarks and the peers' alternately in one run
(W1: ours, PyTorch dense, PyTorch sparse; W2: ours, PyTorch, FAISS; `rounds` times),
prints every JSON line as it comes, then a table of medians with the ratios of ours to
the faster peer, and the sgemm limit.

  python3 bench/compare.py BUILD_DIR [rounds]

Ours runs as a user with no setting would: without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
(some machines set them globally), so the launcher chooses the kernel, re-executing with
the best one when OpenBLAS misreads the CPU. The peers run at their best: with
OMP_WAIT_POLICY=passive, without OPENBLAS_L2_SIZE and with OPENBLAS_CORETYPE set to the
best kernel for this CPU (tk.blas_info().best): PyTorch and FAISS link the same OpenBLAS,
which may not know the CPU and fall back to a weaker kernel. The sgemm limit runs with
the best kernel too."""
import json
import os
import statistics
import subprocess
import sys

build = sys.argv[1] if len(sys.argv) > 1 else "build"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
here = os.path.dirname(os.path.abspath(__file__))
py = "/usr/bin/python3"
ours_env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
best_kernel = subprocess.run([os.path.join(build, "towerkit"), "-e", "io.write(require('towerkit').blas_info().best)"],
                             env=ours_env, stdout=subprocess.PIPE, text=True, check=True).stdout
peer_env = dict(ours_env, OMP_WAIT_POLICY="passive", OPENBLAS_CORETYPE=best_kernel)

OURS_W1 = [os.path.join(build, "towerkit"), os.path.join(here, "w1_train.lua")]
OURS_W2 = [os.path.join(build, "towerkit"), os.path.join(here, "w2_retrieval.lua")]
ours_w1_env = dict(ours_env, LD_PRELOAD=os.path.abspath(os.path.join(build, "bench", "malloc_count.so")))
PLAN = [
    (OURS_W1, ours_w1_env),
    ([py, os.path.join(here, "peers", "torch_w1.py"), "dense"], peer_env),
    ([py, os.path.join(here, "peers", "torch_w1.py"), "sparse"], peer_env),
    (OURS_W2, ours_env),
    ([py, os.path.join(here, "peers", "torch_w2.py")], peer_env),
    ([py, os.path.join(here, "peers", "faiss_w2.py")], peer_env),
]

results = {}  # (workload, system, figure) -> [medians]


def run(cmd, env):
    print("==", " ".join(os.path.relpath(c) if os.path.exists(c) else c for c in cmd), flush=True)
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    for line in out.splitlines():
        print(line, flush=True)
        if line.startswith("{"):
            r = json.loads(line)
            results.setdefault((r["workload"], r["system"], r["figure"]), []).append(r["median"])
    return out


run([os.path.join(build, "bench", "sgemm_limit")], dict(ours_env, OPENBLAS_CORETYPE=best_kernel))
for _ in range(rounds):
    for cmd, env in PLAN:
        run(cmd, env)


def med(workload, system, figure):
    v = results.get((workload, system, figure))
    return statistics.median(v) if v else None


rows = [
    ("W1 train (examples/s)", "W1", "train", ["pytorch_dense", "pytorch_sparse"], True),
    ("W1 peak RSS (MiB)", "W1", "peak_rss", ["pytorch_dense", "pytorch_sparse"], False),
    ("W2 item export (rows/s)", "W2", "item_export", ["pytorch"], True),
    ("W2 top-100 (queries/s)", "W2", "topk", ["pytorch", "faiss"], True),
]
print()
print(f"{'figure':26} {'towerkit':>12} {'best peer':>22} {'ratio':>7}")
for label, w, fig, peers, higher in rows:
    ours = med(w, "towerkit", fig)
    vals = [(med(w, p, fig), p) for p in peers if med(w, p, fig) is not None]
    if ours is None or not vals:
        continue
    best, who = (max if higher else min)(vals)
    ratio = ours / best if higher else best / ours
    print(f"{label:26} {ours:12.0f} {best:12.0f} {who:>9} {ratio:6.2f}x")
bound = med("W1", "sgemm_bound", "train")
ours = med("W1", "towerkit", "train")
if bound and ours:
    print(f"W1 sgemm bound at 2 threads: {bound:.0f} examples/s "
          f"({med('limit', 'openblas', 'sgemm_w1_shapes'):.1f} GFLOP/s on the W1 shapes); "
          f"towerkit reaches {ours / bound:.0%} of it")
    two = med("W1", "sgemm_bound_two_streams", "train")
    if two:
        print(f"W1 sgemm bound as two single-threaded streams: {two:.0f} examples/s "
              f"(towerkit: {ours / two:.0%})")
allocs = med("W1", "towerkit", "steady_state_ctx_allocations")
mallocs = med("W1", "towerkit", "steady_state_step_mallocs")
if allocs is not None:
    print(f"W1 steady state, 150 steps: {allocs:.0f} context allocations, "
          f"{mallocs if mallocs is not None else 'n/a'} mallocs inside the training steps")
