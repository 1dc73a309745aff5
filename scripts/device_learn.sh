#!/usr/bin/env bash
# The first learning curves on a GPU machine, in one device call of at most 10 minutes:
#   1. Atari Pong, experiment=atari_r2ac grad=rtrl, on the fast path (runner=auto: async,
#      the policy on the GPU): a budget of 10M frames (its learning rate decays to 0 there),
#      stopped after PONG_S seconds (default 270) if it has not finished;
#   2. the same with grad=bptt, 5M frames, BPTT_S seconds (default 120; 0 skips it);
#   3. ProcGen CoinRun (easy), experiment=procgen_r2ac grad=rtrl, 3M frames, PROCGEN_S
#      seconds (default 90; skipped when ProcGen's games are not installed).
# A run still going at its time is stopped with SIGINT, so it saves its checkpoint and curve
# like any interrupted run. The three stages and their shutdowns fit one 10-minute call. Writes each run's metrics.csv and learning_curve.png, and results.json (per run: the
# last 100-episode mean return, its best, frames, agent steps, frames/s; the machine; the
# date) under OUT.
#
#   scripts/device_learn.sh OUT              # on the GPU machine (wheels from .whl/ if there)
#   scripts/device_learn.sh OUT --dry-run    # the same stages on the CPU at tiny sizes
set -uo pipefail
OUT=${1:?usage: device_learn.sh OUT [--dry-run]}
DRY=0
[[ ${2:-} == --dry-run ]] && DRY=1
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee "$OUT/device_learn.log") 2>&1
source scripts/device_env.sh

if [[ $DRY == 1 ]]; then  # seconds and frames per stage; a model small enough for 2 CPU cores
  PONG_S=${PONG_S:-25} BPTT_S=${BPTT_S:-15} PROCGEN_S=${PROCGEN_S:-15}
  PONG_F=400 BPTT_F=200 PROCGEN_F=200
  tiny=(device=cpu runner.num_envs=4 runner.unroll=5 model.hidden_size=16 model.stem_out=32)
else
  PONG_S=${PONG_S:-270} BPTT_S=${BPTT_S:-120} PROCGEN_S=${PROCGEN_S:-90}
  PONG_F=10000000 BPTT_F=5000000 PROCGEN_F=3000000
  tiny=(device=cuda)
fi
common=(logger.progress=plain logger.tensorboard=false checkpoint_interval_s=60)

learn() {  # learn NAME SECONDS OVERRIDES...: train until SECONDS, then SIGINT
  local name=$1 limit=$2; shift 2
  [[ $limit -gt 0 ]] || { echo "== $name: skipped (0 s)"; return 0; }
  echo "== $name ($(date -u +%FT%TZ)), ${limit} s: rtrl-train $*"
  "$PY" -m rtrl_rl.train "$@" "${common[@]}" "${tiny[@]}" "run_dir=$OUT/$name" &
  local pid=$! t0=$SECONDS
  while kill -0 "$pid" 2>/dev/null && (( SECONDS - t0 < limit )); do sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid"
  echo "== $name: exit $? after $((SECONDS - t0)) s"
}

learn pong_rtrl "$PONG_S" experiment=atari_r2ac env.game=pong grad=rtrl \
    runner.total_frames="$PONG_F"
learn pong_bptt "$BPTT_S" experiment=atari_r2ac env.game=pong grad=bptt \
    runner.total_frames="$BPTT_F"
if "$PY" -c "from rtrl_rl.envs import procgen_lib; assert procgen_lib.available()" 2>/dev/null; then
  learn coinrun_rtrl "$PROCGEN_S" experiment=procgen_r2ac env.game=coinrun \
      env.distribution_mode=easy grad=rtrl runner.total_frames="$PROCGEN_F"
else
  echo "== coinrun_rtrl: skipped: ProcGen's games are not installed (procgen-mirror)"
fi

"$PY" - "$OUT" <<'PYEOF'
import csv, datetime, json, math, pathlib, platform, sys
import torch
out = pathlib.Path(sys.argv[1])
runs = {}
for run in sorted(p for p in out.iterdir() if (p / "metrics.csv").is_file()):
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    def col(key):
        return [float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")]
    returns, frames = col("return_mean"), col("env_frames")
    runs[run.name] = {
        "rows": len(rows), "frames": frames[-1] if frames else 0,
        "agent_steps": (col("agent_steps") or [None])[-1],
        "return_mean_last": returns[-1] if returns else None,
        "return_mean_best": max(returns) if returns else None,
        "fps_last": (col("fps") or [None])[-1],
    }
result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "python": platform.python_version(), "torch": torch.__version__,
          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
          "runs": runs}
print(json.dumps(result, indent=1))
(out / "results.json").write_text(json.dumps(result, indent=1))
PYEOF
