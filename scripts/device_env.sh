# Sourced by device_check.sh and device_learn.sh, from the repository root, with DRY set:
# the Python to use (PY; the project's .venv in --dry-run), and on the GPU machine the wheels
# carried in .whl/ (installed to /tmp/site when its Python lacks them); this checkout first
# on PYTHONPATH.
PY=${PY:-python3}
[[ $DRY == 1 && -x .venv/bin/python ]] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1
if [[ -d .whl ]] && ! "$PY" -c "import hydra, gymnasium" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
