"""Training on CUDA end to end, and checkpoints that cross devices (``-m gpu``)."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.checkpoint import latest_checkpoint, load_checkpoint
from rtrl_rl.runners.loop import train
from tests.runners.helpers import make_cfg

pytestmark = pytest.mark.gpu
BASE = ["env.delay=3", "runner.total_frames=4000", "model.hidden_size=16", "seed=3"]


@pytest.mark.parametrize("runner", ["sync", "async_worker", "async_learner"])
@pytest.mark.parametrize("grad", ["rtrl", "bptt"])
def test_training_smoke_on_cuda(tmp_path, runner, grad):
    extra = [] if runner == "sync" else [
        "runner=async", "runner.num_workers=2", f"runner.inference={runner.split('_')[1]}"]
    train(make_cfg(tmp_path, *BASE, *extra, "device=cuda", f"grad={grad}", "max_updates=4"))
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert ckpt["learner"]["updates"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["agent"].values())


@pytest.mark.parametrize("first,then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_checkpoint_resumes_across_devices(tmp_path, first, then):
    train(make_cfg(tmp_path, *BASE, f"device={first}", "max_updates=3"))
    train(make_cfg(tmp_path, *BASE, f"device={then}", "max_updates=6", "resume=true"))
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert ckpt["learner"]["updates"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["grad"].values())


def test_bf16_stem_and_heads_train_on_cuda(tmp_path):
    """model.amp=bf16, IMPALA stem on Atari Pong, on CUDA: a few async updates with
    inference on the device; finite weights and float32 RTRL sensitivities."""
    pytest.importorskip("ale_py")
    train(make_cfg(tmp_path, "experiment=atari_r2ac", "env.game=pong", "logger=none",
                   "runner.num_envs=4", "runner.unroll=5", "runner.num_workers=2",
                   "runner.inference=learner", "model.hidden_size=16", "model.amp=bf16",
                   "device=cuda", "max_updates=3", "seed=3"))
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert ckpt["learner"]["updates"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["agent"].values())
    assert all(v.dtype == torch.float32 for v in ckpt["grad"].values())
