#!/usr/bin/env bash
# The one command for a lent GPU machine (the device tool), after bench/gpu_bundle.sh:
#
#     run(command="bash bench/gpu_check.sh", carry=[".gpu"], timeout_s=580)
#
# It unpacks .gpu/, prints the versions it runs, then runs bench/fold_vmap.py (k fold
# models stacked into one), bench/overhead.py on the GPU (plain loop against raydx, GPU
# utilisation), a short search on the GPU (bench/search_overhead.py), and the GPU tests
# (every family's trainer on CUDA, resume and determinism, raydx end to end with fold
# workers sharing the GPU). Each step has
# its own time limit, so a failing one leaves time for the rest; all output also goes to
# $OUT/gpu_check.log. About 6 minutes on an H200 (192 s without the search, 2026-11-28).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
cd "$(dirname "$0")/.."
site=/tmp/raydx-site
mkdir -p "$site" && tar -xJf .gpu/site.tar.xz -C "$site" || { echo "no .gpu/site.tar.xz"; exit 2; }
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
# The machine's memory grows as it is used (MemTotal starts low): Ray's memory monitor
# would read that as pressure and kill workers.
export RAY_memory_monitor_refresh_ms=0
step() { echo; echo "=== $1 ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
nproc; grep -E "MemTotal|MemAvailable" /proc/meminfo; df -h /tmp /dev/shm | tail -2
python3 - <<'PY'
import importlib.metadata as m
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ("ray", "optuna", "numpy", "pandas", "pyarrow", "scikit-learn", "protobuf", "grpcio"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "MISSING")
import ray.train.torch, ray.tune, optuna, raydx  # noqa: F401, E401
print("imports ok")
from ray._private.accelerators import get_accelerator_manager_for_resource as manager
print("GPUs Ray sees:", manager("GPU").get_current_node_num_accelerators())
PY

step "bench/fold_vmap.py: 5 fold models one by one against stacked (vmap), one step"
timeout 60 python3 bench/fold_vmap.py --device cuda
echo "fold_vmap rc $?"

step "bench/overhead.py on the GPU: 5 folds x 50 epochs, seed CNN, BreastMNIST"
timeout 150 python3 bench/overhead.py --device cuda --threads 1 --data .gpu/breastmnist.npz
echo "overhead rc $?"
step "bench/search_overhead.py on the GPU: cnn.yaml, 8 trials x 5 folds x 20 epochs, 2 trials at once"
timeout 180 python3 bench/search_overhead.py --gpus-per-worker 0.1 --trials 8 --epochs 20 \
    --grace-period 5 --data .gpu/breastmnist.npz 2>&1 | grep -vE "│|╭|╰|├|Trial |Current time"
echo "search_overhead rc $?"

step "GPU tests: pytest -m gpu"
timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="-ra" \
    tests/test_augment.py tests/test_families.py tests/test_gpu.py
echo "pytest rc $?"

step "done"
