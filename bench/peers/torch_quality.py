"""The PyTorch side of bench/quality.lua (issue 11): the same two-tower model trained on the
same data, from the same initial weights, on the same batches in the same order.

  python3 bench/peers/torch_quality.py DIR SEEDS BATCH EPOCHS LR

For each seed s, DIR/seed_s holds what towerkit wrote: init.safetensors (the initial
weights, named as towerkit's named_parameters, kernels [in, out]), data.safetensors (the
columns of train/, test/ and items/), order.safetensors (epoch_e: the row order of epoch e;
initial_item_embeddings: towerkit's item embeddings at the initial weights, a check that
both compute the same model). It writes DIR/seed_s/final.safetensors, the trained weights
under the same names, which bench/quality.lua evaluates with towerkit's evaluate.

The model, as towerkit's: per tower, the embeddings of its categorical features
concatenated in sorted feature order, Linear-ReLU-Linear (x @ kernel + bias), L2 norm;
logits q c^T / 0.05, in-batch copies of a row's positive item masked to -inf, mean
cross-entropy; one torch.optim.Adam (dense) over every weight."""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import THREADS, print_blas  # noqa: E402

DTYPES = {"F32": np.float32, "I64": np.int64}
TEMPERATURE = 0.05
TOWERS = {"query": ("user_group", "user_id"), "item": ("item_category", "item_id")}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().contiguous().numpy().astype(np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def tower(w, name, cols):
    x = torch.cat([w[f"{name}/embeddings/{c}"][cols[c]] for c in TOWERS[name]], dim=1)
    x = F.relu(x @ w[f"{name}/mlp/dense_0/kernel"] + w[f"{name}/mlp/dense_0/bias"])
    x = x @ w[f"{name}/mlp/dense_1/kernel"] + w[f"{name}/mlp/dense_1/bias"]
    return F.normalize(x, dim=1)


def run(sdir, batch, epochs, lr):
    w = {k: v.requires_grad_() for k, v in read_safetensors(f"{sdir}/init.safetensors").items()}
    d = read_safetensors(f"{sdir}/data.safetensors")
    orders = read_safetensors(f"{sdir}/order.safetensors")
    train = {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith("train/")}
    items = {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith("items/")}
    with torch.no_grad():
        diff = (tower(w, "item", items) - orders["initial_item_embeddings"]).abs().max().item()
    if diff > 1e-4:
        sys.exit(f"{sdir}: the initial item embeddings differ from towerkit's by {diff:g}: not the same model")
    opt = torch.optim.Adam(list(w.values()), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    n = train["item_id"].numel()
    for e in range(1, epochs + 1):
        order = orders[f"epoch_{e}"]
        for first in range(0, n, batch):
            rows = order[first:first + batch]
            b = {k: v[rows] for k, v in train.items()}
            q, c = tower(w, "query", b), tower(w, "item", b)
            logits = q @ c.T / TEMPERATURE
            ids = b["item_id"]
            same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(ids), dtype=torch.bool)
            loss = F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(ids)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    write_safetensors(f"{sdir}/final.safetensors", w)
    return diff


def main():
    root, seeds, batch, epochs, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    torch.set_num_threads(THREADS)
    print_blas()
    print(f"# torch {torch.__version__}, {THREADS} threads", flush=True)
    for s in range(1, seeds + 1):
        diff = run(f"{root}/seed_{s}", batch, epochs, lr)
        print(f"seed {s:2d}  pytorch trained (initial item embeddings within {diff:.1e} of towerkit's)", flush=True)


if __name__ == "__main__":
    main()
