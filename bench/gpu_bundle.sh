#!/usr/bin/env bash
# Build .gpu/ (git-ignored): what bench/gpu_check.sh needs on a lent GPU machine.
#
#     bash bench/gpu_bundle.sh        # here, with PyPI reachable; a minute or two
#
# That machine has Python 3.12, PyTorch, numpy, pandas, pyarrow, scikit-learn and
# pytest, but no Ray or Optuna, and no network; what it lacks travels with the working
# tree, 64 MiB at most in all (/work/.library/device/README.md). Ray's wheel alone is
# 79 MB, so its parts raydx never imports (Java jars, RLlib, Serve, LLM) are left out and
# the rest goes as one xz tarball of an installed site-packages folder (about 42 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DATA=${DATA:-../shared/data/breastmnist.npz}
plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# Already there (the machine image's package list in /work/.library/device/KINDS.md),
# or not needed by raydx (virtualenv and py-spy serve runtime_env and the dashboard's
# stack traces only).
have='numpy|pandas|pyarrow|aiohttp|aiohappyeyeballs|aiosignal|attrs|certifi'
have+='|charset_normalizer|click|filelock|frozenlist|fsspec|grpcio|idna|msgpack|multidict'
have+='|packaging|prometheus_client|propcache|protobuf|python_dateutil|pyyaml|requests|six'
have+='|tqdm|typing_extensions|urllib3|yarl|wrapt|markupsafe|virtualenv|py_spy|distlib'
have+='|platformdirs|python_discovery'

rm -rf .gpu && mkdir -p .gpu/wheels
$PY -m pip download -q "${plat[@]}" -d .gpu/wheels \
    "ray[tune,train,data,default]==2.60.0" optuna==5.0.0 sqlalchemy==2.1.9
keep=()
for w in .gpu/wheels/*.whl; do
    name=$(basename "$w" | cut -d- -f1 | tr 'A-Z.' 'a-z_')
    [[ "$name" =~ ^($have)$ ]] || keep+=("$w")
done
site=$(mktemp -d)
$PY -m pip install -q --no-deps --no-compile "${plat[@]}" --target "$site" "${keep[@]}"
rm -rf "$site"/ray/jars "$site"/ray/rllib "$site"/ray/serve "$site"/ray/llm "$site"/bin
tar -C "$site" -cf - . | xz -T0 -6 > .gpu/site.tar.xz
cp "$DATA" .gpu/
rm -rf .gpu/wheels "$site"
printf '%s\n' "${keep[@]##*/}" > .gpu/packages.txt
du -sh .gpu/*
