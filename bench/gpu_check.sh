#!/usr/bin/env bash
# The one command for a lent GPU machine (the device tool), after bench/gpu_bundle.sh:
#
#     run(command="bash bench/gpu_check.sh", carry=[".gpu"], timeout_s=540)
#
# It unpacks .gpu/, prints the versions it runs, runs the GPU tests (every family's
# trainer on CUDA, resume and determinism, raydx end to end with fold workers sharing
# the GPU), then bench/overhead.py on the GPU (plain loop against raydx, GPU
# utilisation). Each step has its own time limit, so a failing one leaves time for the
# rest; all output also goes to $OUT/gpu_check.log. About 6 minutes when all goes well.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
cd "$(dirname "$0")/.."
site=/tmp/raydx-site
mkdir -p "$site" && tar -xJf .gpu/site.tar.xz -C "$site" || { echo "no .gpu/site.tar.xz"; exit 2; }
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
step() { echo; echo "=== $1 ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
nproc
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
PY

step "GPU tests: pytest -m gpu"
timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="-ra" \
    tests/test_augment.py tests/test_families.py tests/test_gpu.py
echo "pytest rc $?"

step "bench/overhead.py on the GPU: 5 folds x 50 epochs, seed CNN, BreastMNIST"
timeout 240 python3 bench/overhead.py --device cuda --threads 1 --data .gpu/breastmnist.npz
echo "overhead rc $?"
step "done"
