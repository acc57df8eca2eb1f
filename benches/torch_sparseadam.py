#!/usr/bin/env python3
"""PyTorch baseline for `sparseburn bench train`: the same model on the same row ids.

    nn.EmbeddingBag(rows, dim, mode=<pooling>, sparse=True)  + torch.optim.SparseAdam
    head (Linear [-> ReLU -> Linear ...])                    + torch.optim.Adam
    cross-entropy, same batch size, lr, betas and epsilon, 2 threads.

The inputs come from sparseburn itself, so tokenisation, vocabulary and hashing
are identical by construction:

    sparseburn bench dump-ids configs/debian_sections.toml --out /tmp/debian-ids
    python3 benches/torch_sparseadam.py /tmp/debian-ids --steps 500 --json torch.json

Throughput is measured like sparseburn's: wall time of the training loop
(batch assembly, forward, backward, both optimizer steps), evaluation excluded.
The project does not depend on Python; this script is only for the comparison
in BENCHMARKS.md.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn

UNKNOWN_LABEL = 2**32 - 1


def load_set(d, name):
    ids = np.fromfile(os.path.join(d, f"{name}_ids.u32"), dtype="<u4").astype(np.int64)
    offsets = np.fromfile(os.path.join(d, f"{name}_offsets.u64"), dtype="<u8").astype(np.int64)
    labels = np.fromfile(os.path.join(d, f"{name}_labels.u32"), dtype="<u4").astype(np.int64)
    assert len(offsets) == len(labels) + 1 and offsets[-1] == len(ids)
    return ids, offsets, labels


def gather(ids, offsets, examples):
    """Concatenated ids and per-bag start offsets of `examples` (EmbeddingBag's input)."""
    starts, ends = offsets[examples], offsets[examples + 1]
    lengths = ends - starts
    bag_offsets = np.zeros(len(examples), dtype=np.int64)
    np.cumsum(lengths[:-1], out=bag_offsets[1:])
    # Index of every id: each bag's start, plus 0..len-1 within the bag.
    within = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(bag_offsets, lengths)
    flat = ids[np.repeat(starts, lengths) + within]
    return torch.from_numpy(flat), torch.from_numpy(bag_offsets)


class Model(nn.Module):
    def __init__(self, rows, dim, hidden, classes, pooling):
        super().__init__()
        mode = {"mean": "mean", "sum": "sum"}.get(pooling)
        if mode is None:
            sys.exit(f"pooling {pooling!r} has no nn.EmbeddingBag mode")
        self.bag = nn.EmbeddingBag(rows, dim, mode=mode, sparse=True)
        # sparseburn's default init: uniform in [-1/dim, 1/dim].
        nn.init.uniform_(self.bag.weight, -1.0 / dim, 1.0 / dim)
        layers, width = [], dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, classes))
        self.head = nn.Sequential(*layers)

    def forward(self, flat, offsets):
        return self.head(self.bag(flat, offsets))


def evaluate(model, ids, offsets, labels, k, batch=1024):
    model.eval()
    correct = top_k = 0
    loss_sum, loss_n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(labels), batch):
            ex = np.arange(s, min(s + batch, len(labels)))
            logits = model(*gather(ids, offsets, ex))
            y = labels[ex]
            known = y != UNKNOWN_LABEL
            pred = logits.argmax(1).numpy()
            correct += int(((pred == y) & known).sum())
            topk = logits.topk(min(k, logits.shape[1]), dim=1).indices.numpy()
            top_k += int(((topk == y[:, None]).any(1) & known).sum())
            if known.any():
                yk = torch.from_numpy(y[known])
                loss_sum += float(nn.functional.cross_entropy(logits[torch.from_numpy(known)], yk, reduction="sum"))
                loss_n += int(known.sum())
    model.train()
    n = len(labels)
    return {"accuracy": correct / n, "top_k_accuracy": top_k / n, "k": k, "loss": loss_sum / max(loss_n, 1), "examples": n}


def cpu_snapshot():
    """(machine busy, machine total, this process) CPU ticks, from /proc (Linux)."""
    try:
        cpu = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
        rest = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        own = int(rest[11]) + int(rest[12])
        return sum(cpu) - cpu[3] - cpu[4], sum(cpu), own
    except (OSError, ValueError, IndexError):
        return None


def others_since(start):
    """Share of the machine's CPU used by other processes since `start` (as sparseburn's bench reports it)."""
    end = cpu_snapshot()
    if start is None or end is None:
        return None
    total = max(end[1] - start[1], 1)
    return min(max((end[0] - start[0] - (end[2] - start[2])) / total, 0.0), 1.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ids_dir", help="output of `sparseburn bench dump-ids`")
    p.add_argument("--steps", type=int, default=500, help="training steps (0 = the config's epochs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=None, help="default: the config's seed")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    meta = json.load(open(os.path.join(a.ids_dir, "meta.json")))
    seed = meta["seed"] if a.seed is None else a.seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_ids, train_offsets, train_labels = load_set(a.ids_dir, "train")
    test = load_set(a.ids_dir, "test")
    n, bs = len(train_labels), meta["batch_size"]
    per_epoch = (n + bs - 1) // bs
    steps = a.steps if a.steps > 0 else per_epoch * meta["epochs"]

    model = Model(meta["rows"], meta["dim"], meta["hidden"], meta["classes"], meta["pooling"])
    table_opt = torch.optim.SparseAdam(
        list(model.bag.parameters()), lr=meta["table_lr"], betas=(meta["table_beta1"], meta["table_beta2"]), eps=meta["table_epsilon"]
    )
    head_opt = torch.optim.Adam(
        model.head.parameters(), lr=meta["head_lr"], betas=(meta["head_beta1"], meta["head_beta2"]), eps=meta["head_epsilon"]
    )
    loss_fn = nn.CrossEntropyLoss()
    train_labels_t = torch.from_numpy(train_labels)

    phases = dict(data=0.0, forward=0.0, backward=0.0, optimizer=0.0)
    examples = tokens = 0
    order, pos = rng.permutation(n), 0
    cpu_start = cpu_snapshot()
    t_loop = time.perf_counter()
    for step in range(steps):
        t0 = time.perf_counter()
        if pos >= n:
            order, pos = rng.permutation(n), 0
        ex = order[pos : pos + bs]
        pos += bs
        flat, offs = gather(train_ids, train_offsets, ex)
        y = train_labels_t[torch.from_numpy(ex)]
        t1 = time.perf_counter()
        loss = loss_fn(model(flat, offs), y)
        t2 = time.perf_counter()
        table_opt.zero_grad(set_to_none=True)
        head_opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        table_opt.step()
        head_opt.step()
        t4 = time.perf_counter()
        phases["data"] += t1 - t0
        phases["forward"] += t2 - t1
        phases["backward"] += t3 - t2
        phases["optimizer"] += t4 - t3
        examples += len(ex)
        tokens += len(flat)
    loop_s = time.perf_counter() - t_loop
    other_cpu = others_since(cpu_start)

    result = {
        "framework": f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "steps": steps,
        "batch_size": bs,
        "rows": meta["rows"],
        "dim": meta["dim"],
        "loop_seconds": loop_s,
        "examples_per_second": examples / loop_s,
        "tokens_per_second": tokens / loop_s,
        "step_ms": {k: v / steps * 1e3 for k, v in phases.items()},
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "other_processes_cpu": other_cpu,
        "final_eval": evaluate(model, *test, meta["top_k"]),
    }
    ms = result["step_ms"]
    print(
        f"torch {torch.__version__} ({result['threads']} threads): {steps} steps of {bs}: "
        f"{result['examples_per_second']:.0f} examples/s, {result['tokens_per_second']:.0f} tokens/s; "
        f"step {sum(ms.values()):.3f} ms = data {ms['data']:.3f} + forward {ms['forward']:.3f} + "
        f"backward {ms['backward']:.3f} + optimizers {ms['optimizer']:.3f}; "
        f"accuracy {result['final_eval']['accuracy']:.4f}; peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB"
    )
    if other_cpu is not None:
        print(f"other processes used {other_cpu * 100:.0f}% of the machine's CPU during the loop")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
