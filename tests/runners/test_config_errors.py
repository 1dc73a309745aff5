"""Bad configs fail fast, before any env starts, with one line naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("override,needle", [
    ("model.hidden_size=abc", "model.hidden_size"),
    ("algo.lr=-1", "algo.lr"),
    ("env.delay=-2", "env.delay"),
    ("grad=rtlr", "grad/rtlr"),
    ("model.core=lstm", "model.core=lstm"),
    ("+bogus=1", "bogus"),
    ("runner.kind=later", "runner.kind"),
    ("model.stem=resnet", "model.stem"),
    ("runner=async runner.num_envs=5 runner.num_workers=2", "divisible by runner.num_workers"),
    ("run_dir=/proc/nope", "run_dir /proc/nope: cannot use it"),
    ("runner.batch_size=16", "runner.batch_size: an option of runner=async only"),
    ("+runner.batch_size=16", "runner.batch_size: an option of runner=async, not of runner=sync"),
    ("algo=ppo algo.clip_rho=0.5", "algo.clip_rho: an option of algo=impala, not of algo=ppo"),
    ("model.forget_bias=2", "model.forget_bias: a core's options are in its block, e.g. "
     "model.<core>.forget_bias"),
    ("model.lru.r_min=2", "model.lru.r_min: need 0 <= r_min < r_max <= 1"),
    ("model.rtu.readout=tanh", "model.rtu.readout"),
    ("runner=async runner.inference=learner runner.env_groups=2 runner.num_workers=4 "
     "runner.batch_size=6",
     "runner.batch_size: must be a multiple of the 4 streams of one env group"),
    ("runner=async runner.num_workers=4 runner.batch_size=12",  # auto: worker on a CPU
     "runner.batch_size: must be a multiple of the 8 streams of one worker"),
    ("runner.inference=gpu", "runner.inference"),
    ("runner=async runner.cpu_affinity=yes", "runner.cpu_affinity"),
    ("resume=/nonexistent/run", "resume: no checkpoint found"),
    ("env=gym env.id=tests.envs.space_envs:TextObs-v0",
     "env.id: 'tests.envs.space_envs:TextObs-v0' has a Text observation space"),
    ("env=gym env.id=tests.envs.space_envs:MultiBinaryAct-v0", "has action space MultiBinary"),
    ("env=gym env.wrappers=[{_target_:gymnasium.wrappers.Nope}]",
     "env.wrappers[0]: cannot import 'gymnasium.wrappers.Nope'"),
    ("env=gym env.id=MiniGrid-Empty-5x5-v0", "try env.id=minigrid:MiniGrid-Empty-5x5-v0"),
])
def test_bad_value_is_one_line_naming_the_key(override, needle):
    out = subprocess.run([sys.executable, "-m", "rtrl_rl.train", *override.split(),
                          "logger=none"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr
