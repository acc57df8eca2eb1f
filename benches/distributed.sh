#!/usr/bin/env bash
# Debian sections, one epoch, on 1, 2 and 4 MPI ranks in both [distributed] modes:
# bytes sent per step, step time split into compute and communication, per-rank
# table + state and peak RSS (BENCHMARKS.md, "Training across processes"); then
# row_sharded with a 5M-bucket table held whole (memory.table_rows = "all",
# 3.7 GiB of table + state), the shape of a table that outgrows one machine,
# for per-rank memory.
#   cargo build --release --features mpi && benches/distributed.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/sparseburn}"
out="${1:-$(mktemp -d)}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
sets=(--set logging.quiet=true --set logging.tensorboard=false --set train.epochs=1 --set checkpoint.every=0 --set train.threads=1)
"$BIN" train configs/debian_sections.toml --run-dir "$out/none-1" "${sets[@]}" >/dev/null
# One process with its examples on disk too, as row_sharded keeps them (memory.examples = "auto").
"$BIN" train configs/debian_sections.toml --run-dir "$out/none_disk-1" "${sets[@]}" --set memory.examples=disk >/dev/null
for mode in replicated row_sharded; do
    for n in 1 2 4; do
        mpirun -np "$n" --oversubscribe "$BIN" train configs/debian_sections.toml --run-dir "$out/$mode-$n" "${sets[@]}" --set "distributed.mode=$mode" >/dev/null
    done
done
big=(--set memory.table_rows=all --set vocab.buckets=5000000)
"$BIN" train configs/debian_sections.toml --run-dir "$out/none_all-1" "${sets[@]}" "${big[@]}" >/dev/null
for n in 2 4; do
    mpirun -np "$n" --oversubscribe "$BIN" train configs/debian_sections.toml --run-dir "$out/row_sharded_all-$n" "${sets[@]}" "${big[@]}" --set distributed.mode=row_sharded >/dev/null
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| run | rank | bytes sent/step | step ms | comm ms/step | compute ms/step | table+state MiB | examples in memory MiB | peak RSS MiB | accuracy | eval loss |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name in ["none-1", "none_disk-1"] + [f"{m}-{n}" for m in ("replicated", "row_sharded") for n in (1, 2, 4)] + ["none_all-1", "row_sharded_all-2", "row_sharded_all-4"]:
    base = os.path.join(out, name)
    n = int(name.rsplit("-", 1)[1])
    for r in range(n):
        d = base if r == 0 else os.path.join(base, "ranks", f"rank-{r}")
        s = json.load(open(os.path.join(d, "summary.json")))
        t = s["step_timings"]
        step = sum(t.values())
        dist = s.get("distributed") or {}
        comm = dist.get("communication_ms_per_step", 0.0)
        mb = lambda b: b / 2**20
        print(f"| {name} | {r} | {dist.get('bytes_sent_per_step', 0):,.0f} | {step:.2f} | {comm:.2f} | {step - comm:.2f} | "
              f"{mb(s['table_bytes'] + s['optimizer_state_bytes']):.1f} | {mb(s.get('examples_in_memory_bytes', 0)):.1f} | {mb(s['peak_rss_bytes']):.0f} | {s['final_eval']['accuracy']:.4f} | {s['final_eval']['loss']!r} |")
PY
echo "runs in $out"
