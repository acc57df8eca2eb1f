#!/usr/bin/env python3
"""Markdown accuracy table from model_options.sh and references.py JSON lines.

Usage: table.py RESULTS.jsonl [REFERENCES.jsonl]
Each cell: mean over seeds ± half the range (max - min) / 2, and the seeds' count.
"""

import json
import sys
from collections import defaultdict


def cell(xs):
    m = sum(xs) / len(xs)
    return f"{m:.4f} ± {(max(xs) - min(xs)) / 2:.4f} (n={len(xs)})" if len(xs) > 1 else f"{m:.4f} (n=1)"


def main():
    rows = defaultdict(lambda: defaultdict(list))
    names = []
    datasets = []
    for line in open(sys.argv[1]):
        r = json.loads(line)
        d = r["config"].split("/")[-1].removesuffix(".toml")
        if d not in datasets:
            datasets.append(d)
        name = "sparseburn " + r["variant"]
        if name not in names:
            names.append(name)
        rows[name][d].append(r["accuracy"])
    if len(sys.argv) > 2:
        for line in open(sys.argv[2]):
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            d = r["data"].rstrip("/").split("/")[-1]
            if r["reference"] not in names:
                names.append(r["reference"])
            rows[r["reference"]][d].append(r["accuracy"])
    print("| | " + " | ".join(datasets) + " |")
    print("|---|" + "---|" * len(datasets))
    for n in names:
        print(f"| {n} | " + " | ".join(cell(rows[n][d]) if rows[n][d] else "—" for d in datasets) + " |")


if __name__ == "__main__":
    main()
