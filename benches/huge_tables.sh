#!/usr/bin/env bash
# The two big figures of issue 14, on the whole machine (run nothing else):
#
#  1. In RAM: a 100M-row × 64 table (bf16 rows + rowwise_adagrad, ~13 GB)
#     beside a 10M-row lazy_adam f32 table (7.7 GB), one process each so that
#     each peak RSS is its own: step time at 100M ≤ 1.5 × the 10M lazy_adam
#     step, peak RSS ≤ 1.1 × the memory plan.
#  2. Beyond RAM: a 300M-row × 64 disk-backed table (bf16 + rowwise_adagrad,
#     ~39 GB of files) with Zipf(1) batches: peak RSS ≤ 20 GB, and the step
#     split into fault-in (page faults / disk reads) and compute, against the
#     in-RAM step of part 1.
#
# Without `--table-dtype` in this build of sparseburn (bf16 rows not merged
# yet), tables are f32 and the script says so: the figures then measure f32
# rows, and the 100M/300M sizes need twice the memory / disk.
#
# Usage: benches/huge_tables.sh [--rows-ref N] [--rows-ram N] [--rows-disk N]
#          [--table-dir DIR] [--steps N] [--warmup N] [--dtype bf16] [--skip-ram] [--skip-disk] [--out DIR]
# The table files under --table-dir are removed at the end; on a filesystem mounted with
# `discard` (this VM's root) freeing the written blocks takes minutes for tens of GB.
# Small trial: benches/huge_tables.sh --rows-ref 100000 --rows-ram 1000000 --rows-disk 3000000 --table-dir /tmp/ht
set -euo pipefail

BIN=${SPARSEBURN:-${CARGO_TARGET_DIR:-target}/release/sparseburn}
ROWS_REF=10000000
ROWS_RAM=100000000
ROWS_DISK=300000000
TABLE_DIR=/var/tmp/sparseburn-huge-tables
STEPS=40
WARMUP=64
DTYPE=bf16
RUN_RAM=1
RUN_DISK=1
OUT=${TMPDIR:-/tmp}/sparseburn-huge-tables-$$
while [ $# -gt 0 ]; do
  case "$1" in
    --rows-ref) ROWS_REF=$2; shift 2 ;;
    --rows-ram) ROWS_RAM=$2; shift 2 ;;
    --rows-disk) ROWS_DISK=$2; shift 2 ;;
    --table-dir) TABLE_DIR=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --dtype) DTYPE=$2; shift 2 ;;
    --skip-ram) RUN_RAM=0; shift ;;
    --skip-disk) RUN_DISK=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "huge_tables.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "huge_tables.sh: no binary at $BIN (cargo build --release, or set SPARSEBURN)" >&2; exit 2; }
mkdir -p "$OUT"

# --table-dtype comes with half-precision rows; without it the rows are f32.
DTYPE_ARGS=()
if "$BIN" bench optim --help 2>/dev/null | grep -q -- '--table-dtype'; then
  DTYPE_ARGS=(--table-dtype "$DTYPE")
  echo "rows: $DTYPE"
else
  DTYPE=f32
  echo "rows: f32 (this sparseburn has no --table-dtype: half-precision rows are not in this build)"
fi

# Warm: the bench cycles 64 distinct batches, so after 64 warm-up steps every
# timed step's rows have been touched once (cold first touches are page
# faults, in memory and on disk alike; --warmup 2 measures them). No triad:
# its arrays would count in peak RSS against the plan.
COMMON=(--dim 64 --batch 256 --bag 32 --zipf 1.0 --steps "$STEPS" --warmup "$WARMUP" --rounds 1 --triad-gb 0)
echo "== $(date -u +%FT%TZ) on $(hostname): $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB; uptime: $(uptime)"

bench() { # name, then bench optim arguments
  local name=$1; shift
  echo "-- $name: $BIN bench optim $*"
  /usr/bin/time -v "$BIN" bench optim "$@" --json "$OUT/$name.json" 2> >(tee "$OUT/$name.time" | grep -E "Maximum resident|Elapsed|Major|Minor" >&2)
}

if [ "$RUN_RAM" = 1 ]; then
  bench ref "${COMMON[@]}" --rows "$ROWS_REF" --optimizers lazy_adam
  bench ram "${COMMON[@]}" --rows "$ROWS_RAM" --optimizers rowwise_adagrad "${DTYPE_ARGS[@]}"
fi
if [ "$RUN_DISK" = 1 ]; then
  mkdir -p "$TABLE_DIR"
  echo "free on $TABLE_DIR: $(df -h --output=avail "$TABLE_DIR" | tail -1)"
  bench disk "${COMMON[@]}" --rows "$ROWS_DISK" --optimizers rowwise_adagrad "${DTYPE_ARGS[@]}" --table-storage mmap --table-path "$TABLE_DIR"
  # Cold: 2 warm-up steps, so the timed steps meet most of their batches' rows
  # for the first time (a long run over a real vocabulary keeps meeting new rows).
  COLD=(--dim 64 --batch 256 --bag 32 --zipf 1.0 --steps "$STEPS" --warmup 2 --rounds 1 --triad-gb 0)
  bench disk-cold "${COLD[@]}" --rows "$ROWS_DISK" --optimizers rowwise_adagrad "${DTYPE_ARGS[@]}" --table-storage mmap --table-path "$TABLE_DIR"
fi

# The figures against their targets, from the JSON reports.
python3 - "$OUT" "$DTYPE" <<'EOF'
import json, os, sys
out, dtype = sys.argv[1], sys.argv[2]
def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
def step(run):
    return run["bag_forward"]["median_ms"] + run["bag_backward"]["median_ms"] + run["optimizer_step"]["median_ms"]
ref, ram, disk, cold = load("ref"), load("ram"), load("disk"), load("disk-cold")
print(f"\nissue 14 figures ({dtype} rows; step = bag forward + backward + optimizer, medians):")
for name, r in (("ref", ref), ("ram", ram), ("disk", disk), ("cold", cold)):
    if not r:
        continue
    run = r["runs"][0]
    plan = run["plan_bytes"]
    fault = run["fault_in"]["median_ms"] if run.get("fault_in") else 0.0
    print(f"  {name:4} {run['rows']:>11} rows {run['optimizer']:<16} {run['table_storage']:<6} step {step(run):8.3f} ms"
          f" + fault-in {fault:8.3f} ms; {run['major_faults_per_step']:.0f} major faults, {run['read_bytes_per_step']/1e6:.2f} MB read per step;"
          f" plan {plan/1e9:.2f} GB, peak RSS {r['peak_rss_bytes']/1e9:.2f} GB; other processes {100*(r.get('other_processes_cpu') or 0):.0f}% CPU")
    # Transparent huge pages (bench optim reads AnonHugePages): the table's share when allocated, the process's after the steps.
    if run.get("table_thp") and run["table_storage"] == "memory":
        t = run["table_thp"]
        print(f"       huge pages: table {t['anon_huge_bytes']/1e9:.2f} of {run['table_bytes']/1e9:.2f} GB ({100*t['anon_huge_bytes']/max(run['table_bytes'],1):.0f}%),"
              f" {t['fault_fallback']} fallbacks to 4 KiB and {t['compact_stall']} compaction stalls while it was allocated ({run['table_init_s']:.1f} s);"
              f" process AnonHugePages after the steps {(run.get('anon_huge_bytes') or 0)/1e9:.2f} GB")
if ref and ram:
    a, b = ref["runs"][0], ram["runs"][0]
    ratio = step(b) / step(a)
    print(f"  in RAM: step at {b['rows']} rows / lazy_adam f32 step at {a['rows']} rows = {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")
    # The bench also holds batches and a triad array: the plan here is table + state.
    rss = ram["peak_rss_bytes"] / (b["plan_bytes"])
    print(f"  in RAM: peak RSS / plan (table + state) = {rss:.2f} (target <= 1.1: {'met' if rss <= 1.1 else 'NOT met'})")
if disk:
    d = disk["runs"][0]
    rss = disk["peak_rss_bytes"] / 1e9
    print(f"  on disk: peak RSS {rss:.2f} GB (target <= 20: {'met' if rss <= 20 else 'NOT met'}); files {d['plan_bytes']/1e9:.2f} GB")
    fault = d["fault_in"]["median_ms"]
    total = fault + step(d)
    print(f"  on disk: step {total:.3f} ms = fault-in {fault:.3f} ms ({100*fault/total:.0f}%) + compute {step(d):.3f} ms")
    if ram:
        print(f"  on disk vs in RAM: {total / step(ram['runs'][0]):.2f} x the {ram['runs'][0]['rows']}-row in-RAM step")
if cold:
    c = cold["runs"][0]
    fault = c["fault_in"]["median_ms"]
    print(f"  on disk, cold (2 warm-up steps): step {fault + step(c):.3f} ms = fault-in {fault:.3f} ms + compute {step(c):.3f} ms;"
          f" {c['major_faults_per_step']:.0f} major faults and {c['read_bytes_per_step']/1e6:.2f} MB read per step; peak RSS {cold['peak_rss_bytes']/1e9:.2f} GB")
print(f"reports: {out}")
EOF
rmdir "$TABLE_DIR" 2>/dev/null || true
