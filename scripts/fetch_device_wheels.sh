#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks (it has Python 3.12, torch, numpy 2, numba,
# rich, matplotlib, pandas, tensorboard, imageio and pytest, and reaches no registry) into
# .whl/ (git-ignored), for `device_check.sh` to install there (--no-deps). About 49 MiB in
# all, 45 MiB of it ProcGen's games; with the working tree it stays under the 64 MiB carry.
#
#   scripts/fetch_device_wheels.sh          # then name .whl in the device call's carry
#
# ProcGen's wheel (procgen-mirror) is used without gym3 and gym, which pin numpy < 2:
# rtrl_rl/envs/procgen_lib.py drives its compiled games directly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl  # in .gitignore
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do platforms+=(--platform "$p"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl \
    "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)" \
    "gymnasium==$(version gymnasium)" "farama-notifications==$(version farama-notifications)" \
    "ale-py==$(version ale-py)" "procgen-mirror==0.10.7"
# hydra's parser runtime is published only as an sdist: build its pure-Python wheel here.
"$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
ls -1 .whl
du -sh .whl
