#!/bin/bash
# GPU device check (BENCHMARKS.md, "GPU"): parity of the device table on CUDA,
# the dense head on cuda:0 against the CPU, the GPU memory bound, and step times.
# Build first (here or on the GPU machine):
#   cargo build --release --features cuda
#   cargo test --release --features cuda --test device_table --no-run
# then: benches/gpu_check.sh target/release/sparseburn target/release/deps/device_table-<hash> OUT_DIR
# Needs data/debian_sections (examples/README-debian.md).
set -u
B=${1:?sparseburn binary built with --features cuda}
T=${2:?device_table test binary built with --features cuda}
OUT=${3:?output folder}
mkdir -p "$OUT"
RUNS=$(mktemp -d)
step() { echo; echo "=== $* ($(date +%T))"; }
sample_gpu() { while sleep 0.5; do nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader; done; }
{
step gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step device_table tests on CUDA
timeout 150 "$T" --test-threads 1 2>&1 | grep -E "^test |test result"
step quickstart, dense head on cuda:0, then on the CPU
timeout 90 "$B" train configs/quickstart.toml --set 'placement.dense="cuda:0"' --set logging.log_device_placement=true --set logging.quiet=true --run-dir "$RUNS/quickstart-cuda" 2>&1 | tail -8
timeout 90 "$B" train configs/quickstart.toml --set logging.quiet=true --run-dir "$RUNS/quickstart-cpu" 2>&1 | tail -2
step GPU memory bound refuses before allocating
timeout 40 "$B" train configs/quickstart.toml --set 'placement.dense="cuda:0"' --set memory.gpu_max_gb=0.000001 --run-dir "$RUNS/bound" 2>&1 | tail -3
step linear head, 2000 steps, cuda then cpu
timeout 100 "$B" bench train configs/debian_sections.toml --set 'placement.dense="cuda:0"' --steps 2000 --json "$OUT/cuda-linear.json"
timeout 60 "$B" bench train configs/debian_sections.toml --steps 2000 --json "$OUT/cpu-linear.json"
step MLP 1024x1024 head, batch 512: cuda 600 steps with GPU memory sampled, cpu 200 steps
sample_gpu > "$OUT/gpu-samples.txt" & S=$!
timeout 120 "$B" bench train configs/debian_sections.toml --set 'placement.dense="cuda:0"' --set 'model.hidden=[1024,1024]' --set train.batch_size=512 --steps 600 --json "$OUT/cuda-mlp.json"
kill $S; echo "GPU memory.used, utilization (max of $(wc -l < "$OUT/gpu-samples.txt") samples): $(sort -n "$OUT/gpu-samples.txt" | tail -1)"
timeout 100 "$B" bench train configs/debian_sections.toml --set 'model.hidden=[1024,1024]' --set train.batch_size=512 --steps 200 --json "$OUT/cpu-mlp.json"
} 2>&1 | tee "$OUT/log.txt"
