#!/usr/bin/env bash
# Accuracy of the model options of issue 17 item 10 (tokenizer.split, character
# n-grams, label smoothing), 3 seeds each, one training at a time, 2 threads.
# Usage: benches/datasets/model_options.sh OUT.jsonl CONFIG... (variants below)
# Each line of OUT.jsonl: {"config", "variant", "seed", "accuracy", "top_k_accuracy", "loss"} (final eval).
set -euo pipefail
out="$1"; shift
bin="${SPARSEBURN_BIN:-${CARGO_TARGET_DIR:-target}/release/sparseburn}"
seeds="${SEEDS:-1 2 3}"
declare -A variants=(
  [base]=""
  [whitespace]="tokenizer.split=whitespace"
  [char3-6]="vocab.minn=3 vocab.maxn=6"
  [ls0.1]="train.label_smoothing=0.1"
  [whitespace+char3-6]="tokenizer.split=whitespace vocab.minn=3 vocab.maxn=6"
)
order="${VARIANTS:-base whitespace ls0.1 char3-6 whitespace+char3-6}"
logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT
for config in "$@"; do
  for v in $order; do
    for seed in $seeds; do
      sets=(--set experiment.seed="$seed" --set train.threads=2 --set logging.quiet=true --set logging.tensorboard=false
            --set checkpoint.every=0 --set logging.dir="$logdir")
      for kv in ${variants[$v]}; do sets+=(--set "$kv"); done
      run="$logdir/run-$(basename "$config" .toml)-$v-$seed"
      "$bin" train "$config" "${sets[@]}" --run-dir "$run" >/dev/null 2>"$run.log" || { cat "$run.log"; exit 1; }
      python3 - "$run/summary.json" "$config" "$v" "$seed" >>"$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["final_eval"]
print(json.dumps({"config": sys.argv[2], "variant": sys.argv[3], "seed": int(sys.argv[4]),
                  "accuracy": s["accuracy"], "top_k_accuracy": s["top_k_accuracy"], "loss": s["loss"]}))
PY
      tail -1 "$out"
      rm -rf "$run"
    done
  done
done
