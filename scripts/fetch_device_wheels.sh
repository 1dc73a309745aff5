#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks (it has Python 3.12, torch, numpy 2, numba,
# rich, matplotlib, pandas, tensorboard, imageio and pytest, and reaches no registry) into
# .whl/ (git-ignored), for `device_check.sh` to install there. Under 64 MiB in all.
#
#   scripts/fetch_device_wheels.sh          # then name .whl in the device call's carry
#
# ProcGen is not fetched: procgen-mirror needs gym3, which pins numpy < 2, and the GPU machine
# has numpy 2; device_check.sh skips that family and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do platforms+=(--platform "$p"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl \
    "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)" \
    "gymnasium==$(version gymnasium)" "farama-notifications==$(version farama-notifications)" \
    "ale-py==$(version ale-py)"
# hydra's parser runtime is published only as an sdist: build its pure-Python wheel here.
"$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
ls -1 .whl
du -sh .whl
