#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: the gpu tests, the learner update's cost on
# the device, and end-to-end throughput on CUDA. Writes a log and JSON under OUT.
#
#   scripts/device_check.sh OUT              # on the GPU machine (wheels from .whl/ if there)
#   scripts/device_check.sh OUT --dry-run    # the same steps on the CPU at tiny sizes
#
# Steps (each under its own time limit; on the GPU they add up to 9.3 minutes at most; on an
# H200 on 2026-12-04 the steps took 60, 33, 230 (estimated from 4 of 6 rows), 21 and 38 s):
#   1. machine report (nvidia-smi, python, torch, numpy) and which env families import
#   2. pytest -m gpu (they skip without CUDA; 60 s per test where pytest-timeout exists)
#   3. bench_learner.py: the whole learner update on Atari Pong (IMPALA stem + eLSTM 256,
#      B=32, T=50), rtrl against bptt, in float32 and with model.amp=bf16
#   4. bench_throughput.py for Atari Pong and ProcGen CoinRun (a family that does not import
#      is skipped, and the log says why): sync, async inference=worker and async
#      inference=learner, each with rtrl and bptt; 16 workers, 128 streams, batches of 32
#   5. bench_grad.py at B=32, T=50, N=256: rtrl, bptt, one_step (eLSTM); then the
#      RTU and LRU cores at N=256: rtrl and bptt
# ONLY=gpu_tests,bench_grad (step names, comma-separated) runs those steps alone, for a rerun;
# TESTS=tests/grad/test_cuda.py narrows the gpu tests; PLACEMENTS=learner the throughput rows.
# Exit status: 0 when every step that ran passed, 1 otherwise.
set -uo pipefail
OUT=${1:?usage: device_check.sh OUT [--dry-run]}
DRY=0
[[ ${2:-} == --dry-run ]] && DRY=1
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
exec > >(tee "$OUT/device_check.log") 2>&1
source scripts/device_env.sh
DEVICE=cuda
[[ $DRY == 1 ]] && DEVICE=cpu
failed=0
: > "$OUT/steps.jsonl"

step() {  # step NAME SECONDS CMD...: run, time, record
  local name=$1 limit=$2; shift 2
  [[ -z ${ONLY:-} || ,$ONLY,machine, == *,$name,* ]] || return 0
  echo "== $name ($(date -u +%FT%TZ)): $*"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  printf '{"step": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" "$((SECONDS - t0))" \
      >> "$OUT/steps.jsonl"
  [[ $rc == 0 ]] || failed=1
}

step machine 20 "$PY" - "$OUT/machine.json" <<'PYEOF'
import json, platform, subprocess, sys
import numpy, torch
info = {"python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                        timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    info["nvidia_smi"] = None
def procgen_games():  # the compiled games, without procgen's gym3 wrappers
    from rtrl_rl.envs.procgen_lib import ProcgenLib
    ProcgenLib(1, "coinrun", num_threads=0).close()

families = {}
for family, check in (("atari", lambda: __import__("ale_py")), ("procgen", procgen_games),
                      ("config", lambda: __import__("hydra"))):
    try:
        check()
        families[family] = "ok"
    except Exception as e:  # a missing wheel or system library, ...
        families[family] = f"skipped: {type(e).__name__}: {e}"
info["families"] = families
print(json.dumps(info, indent=1))
json.dump(info, open(sys.argv[1], "w"), indent=1)
PYEOF
envs=$("$PY" -c "import json,sys; f=json.load(open(sys.argv[1]))['families']; \
print(','.join(n for n, k in (('atari_pong','atari'),('procgen_coinrun','procgen')) if f[k]=='ok'))" \
    "$OUT/machine.json" 2>/dev/null)
echo "env families for throughput: ${envs:-none}"

# The tests first: they are what a rerun after a fix needs, and they are quick.
per_test=()  # a hung test fails alone, with its stack, instead of eating the step
"$PY" -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout 60)
step gpu_tests 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu ${TESTS:-tests} ${per_test[@]+"${per_test[@]}"} \
    --junitxml "$OUT/gpu_tests.xml"

# Then the learner update and throughput, so that a check cut short still has them; then the
# core-only grid.
if [[ $DRY == 1 ]]; then
  learner=(--batch 4 --unroll 5 --rounds 2 --block 1 model.hidden_size=16)
else
  learner=(--batch 32 --unroll 50 --rounds 6 --block 4)
fi
step bench_learner 45 "$PY" scripts/bench_learner.py --device "$DEVICE" "${learner[@]}" \
    --json "$OUT/bench_learner.json"
step bench_learner_bf16 35 "$PY" scripts/bench_learner.py --device "$DEVICE" \
    "${learner[@]}" model.amp=bf16 --json "$OUT/bench_learner_bf16.json"

if [[ -n $envs ]]; then
  if [[ $DRY == 1 ]]; then
    step bench_throughput 180 "$PY" scripts/bench_throughput.py --device "$DEVICE" \
        --envs "$envs" --placements "${PLACEMENTS:-sync,worker,learner}" --num-envs 4 --batch-size 2 --unroll 5 --updates 2 --workers 2 \
        --env-seconds 1 --json "$OUT/bench_throughput.json"
  else  # on an H200 each row took 30-40 s, most of it starting 16 workers
    step bench_throughput 240 "$PY" scripts/bench_throughput.py --device "$DEVICE" \
        --envs "$envs" --placements "${PLACEMENTS:-sync,worker,learner}" --num-envs 128 --batch-size 32 --unroll 50 --updates 20 --workers 16 \
        --env-seconds 4 --json "$OUT/bench_throughput.json"
  fi
fi


if [[ $DRY == 1 ]]; then
  step bench_grad 120 "$PY" scripts/bench_grad.py --device "$DEVICE" --points 5:16 --batch 4 \
      --rounds 2 --block 1 --repeat 1 --methods rtrl,bptt,one_step --json "$OUT/bench_grad.json"
  step bench_grad_cells 60 "$PY" scripts/bench_grad.py --device "$DEVICE" --points 5:16 \
      --batch 4 --rounds 2 --block 1 --repeat 1 --methods rtrl,bptt --cores rtu,lru \
      --json "$OUT/bench_grad_cells.json"
else
  step bench_grad 60 "$PY" scripts/bench_grad.py --device "$DEVICE" --points 50:256 \
      --rounds 5 --block 4 --repeat 1 --methods rtrl,bptt,one_step --json "$OUT/bench_grad.json"
  step bench_grad_cells 70 "$PY" scripts/bench_grad.py --device "$DEVICE" --points 50:256 \
      --rounds 4 --block 4 --repeat 1 --methods rtrl,bptt --cores rtu,lru \
      --json "$OUT/bench_grad_cells.json"
fi
# One file for every JSON written (the device tool brings back at most 8 files).
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
parts = sorted(out.glob("*.json")) + [out / "steps.jsonl"]
bundle = {p.name: json.loads(p.read_text()) for p in parts[:-1]}
bundle["steps"] = [json.loads(line) for line in parts[-1].read_text().splitlines()]
(out / "results.json.tmp").write_text(json.dumps(bundle, indent=1))
for p in parts:
    p.unlink()
(out / "results.json.tmp").rename(out / "results.json")
PYEOF
echo "== done: $( [[ $failed == 0 ]] && echo all steps passed || echo some step failed ); \
files in $OUT (every JSON in results.json)"
exit $failed
