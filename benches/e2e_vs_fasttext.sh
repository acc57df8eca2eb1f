#!/usr/bin/env bash
# sparseburn's whole `train` process beside fastText's train_supervised + save_model, on the
# same split, in turn (sparseburn, fastText, sparseburn, fastText, ...) N times, then the
# ratios pair by pair: pairing keeps a ratio meaningful when a shared machine's speed drifts.
# Every run records `other_processes_cpu` (the share of the machine other processes used);
# quote it with the figures.
#
#   benches/e2e_vs_fasttext.sh [-n 3] [-b target/release/sparseburn] [-c configs/debian_sections.toml]
#                              [-o runs/e2e-vs-fasttext] [-- --set checkpoint.every=0 ...]
#
# fastText runs from the venv in $FT_PYTHON (default ~/.cache/sparseburn-ftvenv/bin/python,
# `pip install fasttext-wheel`). Its settings are benches/fasttext_e2e.py's defaults, which
# match configs/debian_sections.toml; the data files are the config's ($TRAIN, $TEST override).
set -euo pipefail

N=3
BIN=target/release/sparseburn
CONFIG=configs/debian_sections.toml
OUT=runs/e2e-vs-fasttext
PY=${FT_PYTHON:-$HOME/.cache/sparseburn-ftvenv/bin/python}
while getopts "n:b:c:o:" opt; do
    case $opt in
        n) N=$OPTARG ;;
        b) BIN=$OPTARG ;;
        c) CONFIG=$OPTARG ;;
        o) OUT=$OPTARG ;;
        *) sed -n '2,13p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
# The data files named in the config (top-level `train = ` / `test = ` of [data]).
data_key() { awk -v k="$1" '/^\[/{s=($0=="[data]")} s && $1==k {gsub(/"/,"",$3); print $3}' "$CONFIG"; }
TRAIN=${TRAIN:-$(data_key train)}
TEST=${TEST:-$(data_key test)}
[ -n "$TRAIN" ] && [ -n "$TEST" ] || { echo "$CONFIG: needs data.train and data.test (or set TRAIN and TEST)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "$BIN: not an executable (build with cargo build --release, or give -b)" >&2; exit 2; }
[ -x "$PY" ] || { echo "$PY: no Python with fastText (set FT_PYTHON)" >&2; exit 2; }
mkdir -p "$OUT"

for i in $(seq 1 "$N"); do
    "$BIN" bench e2e "$CONFIG" "$@" --work-dir "$OUT" --json "$OUT/sparseburn-$i.json"
    "$PY" benches/fasttext_e2e.py "$TRAIN" "$TEST" --out "$OUT/fasttext" --json "$OUT/fasttext-$i.json"
done

python3 - "$OUT" "$N" <<'EOF'
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
pairs = []
for i in range(1, n + 1):
    sb = json.load(open(f"{out}/sparseburn-{i}.json"))["runs"][0]
    ft = json.load(open(f"{out}/fasttext-{i}.json"))["runs"][0]
    pairs.append({
        "sparseburn": {"wall_s": sb["process"]["wall_s"], "write_bytes": sb["process"]["io"]["write_bytes"],
                       "peak_rss_bytes": sb["process"]["peak_rss_bytes"], "accuracy": sb["accuracy"],
                       "other_processes_cpu": sb["process"]["other_processes_cpu"]},
        "fasttext": {k: ft[k] for k in ("wall_s", "write_bytes", "peak_rss_bytes", "accuracy", "other_processes_cpu")},
    })
def spread(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}
summary = {"pairs": pairs, "ratio_sparseburn_over_fasttext": {
    k: spread([p["sparseburn"][k] / max(p["fasttext"][k], 1) if k != "wall_s" else p["sparseburn"][k] / p["fasttext"][k] for p in pairs])
    for k in ("wall_s", "write_bytes", "peak_rss_bytes")}}
for i, p in enumerate(pairs, 1):
    s, f = p["sparseburn"], p["fasttext"]
    print(f"pair {i}: wall {s['wall_s']:.2f} / {f['wall_s']:.2f} s = {s['wall_s'] / f['wall_s']:.2f}x; "
          f"written {s['write_bytes'] / 1e9:.2f} / {f['write_bytes'] / 1e9:.2f} GB; "
          f"peak RSS {s['peak_rss_bytes'] / 1e9:.2f} / {f['peak_rss_bytes'] / 1e9:.2f} GB; "
          f"accuracy {s['accuracy']:.4f} / {f['accuracy']:.4f}; "
          f"other processes {s['other_processes_cpu'] * 100:.0f}% / {f['other_processes_cpu'] * 100:.0f}% CPU")
for k, v in summary["ratio_sparseburn_over_fasttext"].items():
    print(f"sparseburn / fastText {k}: median {v['median']:.2f} (min {v['min']:.2f}, max {v['max']:.2f}) over {n} pairs")
with open(f"{out}/summary.json", "w") as f:
    json.dump(summary, f, indent=2)
print(f"wrote {out}/summary.json")
EOF
