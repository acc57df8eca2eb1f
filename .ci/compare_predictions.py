#!/usr/bin/env python3
"""Compares two JSON-lines prediction files (`sparseburn predict --top-k 0` and
`examples/python/predict.py --top-k 0`): same number of lines, and for every
line the same labels with probabilities within --tolerance.

Usage: compare_predictions.py A.jsonl B.jsonl [--tolerance 1e-5]
Exits 0 when they agree, 1 with the first differences otherwise.
"""

import argparse
import json
import sys


def read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    a, b = read(args.a), read(args.b)
    if len(a) != len(b) or not a:
        print(f"compare_predictions: {args.a} has {len(a)} lines, {args.b} has {len(b)}", file=sys.stderr)
        return 1
    problems, worst = [], 0.0
    for n, (x, y) in enumerate(zip(a, b), 1):
        if "error" in x or "error" in y:
            problems.append(f"line {n}: error {x.get('error') or y.get('error')}")
            continue
        px, py = dict(zip(x["labels"], x["scores"])), dict(zip(y["labels"], y["scores"]))
        if set(px) != set(py):
            problems.append(f"line {n}: labels {sorted(px)} vs {sorted(py)}")
            continue
        diff = max(abs(px[k] - py[k]) for k in px)
        worst = max(worst, diff)
        if diff > args.tolerance:
            problems.append(f"line {n}: probabilities differ by {diff:.3g}: {px} vs {py}")
    for p in problems[:10]:
        print(f"compare_predictions: {p}", file=sys.stderr)
    print(f"compare_predictions: {len(a)} lines, largest difference {worst:.3g} (tolerance {args.tolerance:g}), {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
