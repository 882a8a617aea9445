"""W1 (bench/WORKLOAD.md) in PyTorch: the two-tower training step, batch 1024, towers 256-128,
L2 norm, in-batch softmax at temperature 0.05, 2 threads.

  python3 bench/peers/torch_w1.py dense    # nn.Embedding, one Adam over everything
  python3 bench/peers/torch_w1.py sparse   # sparse embeddings with SparseAdam, Adam for the rest

5 warm-up steps, then 3 runs of 50 steps; median and min-max examples/s, peak RSS.
Run with OMP_WAIT_POLICY=passive (the Makefile does), which helps PyTorch here."""
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import B, THREADS, emit, peak_rss_mib, print_blas, w1_data  # noqa: E402

STEPS, RUNS, WARMUP, DIM = 50, 3, 5, 64


class Tower(nn.Module):
    def __init__(self, tables, n_lists, sparse):
        super().__init__()
        self.emb = nn.ModuleList(nn.Embedding(n, DIM, sparse=sparse) for n in tables)
        self.bags = nn.ModuleList(nn.EmbeddingBag(n, DIM, mode="mean", sparse=sparse) for n in n_lists)
        width = DIM * (len(tables) + len(n_lists)) + 1
        self.mlp = nn.Sequential(nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 128))
        for e in list(self.emb) + list(self.bags):
            nn.init.normal_(e.weight, std=0.05)

    def forward(self, ids, lists, cont):
        parts = [e(i) for e, i in zip(self.emb, ids)]
        parts += [b(v, o) for b, (v, o) in zip(self.bags, lists)]
        parts.append(cont[:, None])
        return F.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


def main():
    variant = sys.argv[1] if len(sys.argv) > 1 else "dense"
    sparse = variant == "sparse"
    torch.set_num_threads(THREADS)
    print_blas()
    torch.manual_seed(42)
    query = Tower([100_000, 200, 16], [1000], sparse)
    item = Tower([200_000, 1000, 5000], [], sparse)
    emb_params = [p for t in (query, item) for m in list(t.emb) + list(t.bags) for p in m.parameters()]
    mlp_params = [p for t in (query, item) for p in t.mlp.parameters()]
    if sparse:
        opts = [torch.optim.SparseAdam(emb_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
                torch.optim.Adam(mlp_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)]
    else:
        opts = [torch.optim.Adam(emb_params + mlp_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)]

    n = (STEPS + WARMUP) * B
    d = {k: torch.from_numpy(v) for k, v in w1_data(n, 1).items()}
    off = d["user_recent_categories__offsets"]
    batches = []
    for s in range(STEPS + WARMUP):  # the batches, built before timing
        a, b = s * B, (s + 1) * B
        lo, hi = int(off[a]), int(off[b])
        batches.append((
            [d["user_id"][a:b], d["user_country"][a:b], d["user_age_bucket"][a:b]],
            [(d["user_recent_categories__values"][lo:hi], off[a:b] - lo)],
            d["user_activity"][a:b],
            [d["item_id"][a:b], d["item_category"][a:b], d["item_brand"][a:b]],
            d["item_price"][a:b],
        ))
    labels = torch.arange(B)

    def step(batch):
        qids, qlists, qc, iids, ic = batch
        q = query(qids, qlists, qc)
        c = item(iids, [], ic)
        loss = F.cross_entropy(q @ c.T / 0.05, labels)
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
        return loss

    for s in range(WARMUP):
        step(batches[s])
    rates = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        for s in range(STEPS):
            loss = step(batches[WARMUP + s])
        loss.item()
        rates.append(STEPS * B / (time.perf_counter() - t0))
    system = "pytorch_" + variant
    emit("W1", system, "train", "examples/s", rates, threads=THREADS, steps=STEPS, batch=B,
         torch=torch.__version__)
    emit("W1", system, "peak_rss", "MiB", median=peak_rss_mib())


if __name__ == "__main__":
    main()
