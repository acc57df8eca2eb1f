#!/usr/bin/env bash
# Export of a 100M-row bf16 table (rowwise_adagrad with weight decay, so export
# applies the decay every row still owes): wall time and peak RSS of
# `sparseburn export`, against the bundle's size. Needs ~13 GB of free disk.
# BIN_BEFORE=<older binary> exports the same run with it too, back to back, and
# the two bundles' tensors are compared.
#   cargo build --release && benches/export_table.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/sparseburn}"
out="${1:-$(mktemp -d)}"
others() { ps -eo pcpu=,comm= | awk '$2 !~ /sparseburn|ps|awk/ {s += $1} END {printf "%.0f%%", s}'; }
"$BIN" train configs/quickstart.toml --run-dir "$out/run" --set vocab.buckets=100000000 --set model.table_dtype=bf16 \
    --set optimizer.table.kind=rowwise_adagrad --set optimizer.table.lr=0.2 --set optimizer.table.weight_decay=0.001 \
    --set memory.table_rows=all --set train.epochs=2 --set logging.quiet=true --set logging.tensorboard=false >/dev/null
export_with() { # name binary
    echo "$1: other processes $(others) of the CPU before"
    /usr/bin/time -f "$1: export wall %e s, peak RSS %M KB" "$2" export "$out/run" --out "$out/bundle-$1" 2>&1 | grep -v "^warning"
    echo "$1: bundle $(du -b "$out/bundle-$1/model.safetensors" | cut -f1) bytes"
}
export_with streamed "$BIN"
if [ -n "${BIN_BEFORE:-}" ]; then
    export_with before "$BIN_BEFORE"
    python3 - "$out/bundle-streamed/model.safetensors" "$out/bundle-before/model.safetensors" <<'PY'
import hashlib, json, struct, sys
def tensors(path):
    f = open(path, "rb"); n = struct.unpack("<Q", f.read(8))[0]; header = json.loads(f.read(n)); out = {}
    for name, info in sorted(header.items()):
        if name == "__metadata__": continue
        a, b = info["data_offsets"]; f.seek(8 + n + a); h = hashlib.sha256(); left = b - a
        while left: chunk = f.read(min(left, 64 << 20)); h.update(chunk); left -= len(chunk)
        out[name] = (info["dtype"], info["shape"], h.hexdigest())
    return out
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
print("tensors identical:", a == b, {k: v[:2] for k, v in a.items()})
PY
    rm -rf "$out/bundle-before"
fi
echo "runs in $out"
