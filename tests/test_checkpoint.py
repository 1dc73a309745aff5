"""Checkpoints: atomic writes, keep-last-K, weights_only round trips, errors, RNG state."""

from __future__ import annotations

import copy
import os
import random
import stat

import numpy as np
import pytest
import torch
from torch import nn

from rtrl_rl.checkpoint import (
    CheckpointError,
    capture_rng,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_module_state,
    load_optimizer_state,
    restore_rng,
    save_checkpoint,
)


def _model(hidden: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def _realistic_state() -> dict:
    model = _model()
    opt = torch.optim.RMSprop(model.parameters(), lr=6e-4, alpha=0.99, eps=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()  # so the optimizer has per-parameter state tensors
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": capture_rng(),
        "env_frames": 123_456,
        "updates": 42,
        "wandb_id": "ab12cd34",
        "grad_module": {"trace": torch.randn(2, 8, 4), "meta": {"n": 3, "kind": "rtrl"}},
        "episode_returns": [1.5, -2.0],
        "extras": (torch.zeros(2, dtype=torch.int64), None, True, 0.25),
    }


def _assert_same(a, b, where="state"):
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _stray_files(ckpt_dir):
    return [p.name for p in ckpt_dir.iterdir() if not p.name.startswith("ckpt_")]


def test_round_trip_realistic_state(tmp_path):
    state = _realistic_state()
    path = save_checkpoint(tmp_path, state, step=123_456)
    assert path == tmp_path / "ckpt_000000123456.pt" == checkpoint_path(tmp_path, 123_456)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    loaded = load_checkpoint(path, required=("model", "optimizer", "rng", "wandb_id"))
    _assert_same(state, loaded)

    model = _model(hidden=8)
    load_module_state(model, loaded["model"])
    opt = torch.optim.RMSprop(model.parameters(), lr=6e-4)
    load_optimizer_state(opt, loaded["optimizer"])
    assert opt.state_dict()["param_groups"][0]["eps"] == 0.01


def test_keep_last_k_and_latest(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 9, 10, 100, 1000):
        save_checkpoint(tmp_path, {"step": step}, step=step, keep=3)
    steps = [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)]
    assert steps == [10, 100, 1000]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 1000


def test_saving_an_older_step_drops_checkpoints_of_the_abandoned_attempt(tmp_path):
    for step in (100, 200, 300):
        save_checkpoint(tmp_path, {"step": step}, step=step, keep=5)
    save_checkpoint(tmp_path, {"step": 150}, step=150, keep=5)  # resumed from step 100
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt_000000000100.pt", "ckpt_000000000150.pt"
    ]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 150)
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, {}, step=1, keep=0)


def test_unpicklable_state_leaves_previous_intact(tmp_path):
    good = save_checkpoint(tmp_path, {"x": torch.arange(3)}, step=1)
    with pytest.raises(CheckpointError, match="ckpt_000000000002.pt"):
        save_checkpoint(tmp_path, {"fn": lambda: 0}, step=2)
    assert list_checkpoints(tmp_path) == [good]
    assert torch.equal(load_checkpoint(good)["x"], torch.arange(3))
    assert _stray_files(tmp_path) == []


def test_failed_rename_leaves_previous_intact(tmp_path, monkeypatch):
    good = save_checkpoint(tmp_path, {"x": 1}, step=1)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CheckpointError, match="disk full"):
        save_checkpoint(tmp_path, {"x": 2}, step=2)
    monkeypatch.undo()
    assert list_checkpoints(tmp_path) == [good]
    assert load_checkpoint(good)["x"] == 1
    assert _stray_files(tmp_path) == []


def test_interrupted_save_leaves_no_temp_file(tmp_path, monkeypatch):
    good = save_checkpoint(tmp_path, {"x": 1}, step=1)

    def interrupted(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, {"x": 2}, step=2)
    monkeypatch.undo()
    assert list_checkpoints(tmp_path) == [good] and _stray_files(tmp_path) == []


def test_state_not_weights_only_loadable_is_refused_at_save(tmp_path):
    good = save_checkpoint(tmp_path, {"x": 1}, step=1)
    with pytest.raises(CheckpointError, match="weights_only") as info:
        save_checkpoint(tmp_path, {"arr": np.zeros(3)}, step=2)
    assert "\n" not in str(info.value)
    assert list_checkpoints(tmp_path) == [good]
    assert _stray_files(tmp_path) == []


def test_stale_temp_files_are_cleaned(tmp_path):
    (tmp_path / ".ckpt_crashed.tmp").write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path, {"x": 1}, step=1)
    assert _stray_files(tmp_path) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not_a_dict", "missing"])
def test_unreadable_checkpoint_raises_checkpoint_error(tmp_path, damage):
    path = save_checkpoint(tmp_path, _realistic_state(), step=7)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_a_dict":
        torch.save(torch.zeros(2), path)
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert isinstance(info.value, RuntimeError)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_required_keys(tmp_path):
    path = save_checkpoint(tmp_path, {"model": {}, "env_frames": 3}, step=3)
    with pytest.raises(CheckpointError, match="optimizer, rng"):
        load_checkpoint(path, required=("model", "optimizer", "rng"))


def _draws() -> tuple:
    return (
        [random.random() for _ in range(3)],
        random.gauss(0.0, 1.0),
        np.random.rand(3).tolist(),
        float(np.random.normal()),
        torch.rand(3).tolist(),
        torch.randint(0, 1000, (4,)).tolist(),
    )


def test_rng_capture_restore_reproduces_draws(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0.0, 1.0)  # leaves a cached gaussian in python's state
    np.random.normal()  # ... and in numpy's
    path = save_checkpoint(tmp_path, {"rng": capture_rng()}, step=1)
    expected = _draws()

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert _draws() != expected
    restore_rng(load_checkpoint(path)["rng"])
    assert _draws() == expected


def test_restore_rng_rejects_malformed_state():
    with pytest.raises(CheckpointError, match="RNG"):
        restore_rng({"python": {}})


def test_load_module_state_reports_mismatches():
    saved = _model(hidden=8).state_dict()
    with pytest.raises(CheckpointError) as info:
        load_module_state(_model(hidden=16), saved, what="model")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("model state")
    assert "0.weight (8, 4) vs (16, 4)" in msg

    partial = {k: v for k, v in saved.items() if not k.startswith("2.")}
    partial["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: 2\.weight, 2\.bias.*unexpected keys"):
        load_module_state(_model(hidden=8), partial)


def test_load_optimizer_state_mismatch():
    big = torch.optim.SGD(_model(hidden=16).parameters(), lr=0.1)
    small = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(CheckpointError, match="optimizer"):
        load_optimizer_state(small, big.state_dict())


def test_a_nonfinite_state_is_not_written_and_the_previous_are_kept(tmp_path):
    from rtrl_rl.checkpoint import nonfinite_entry

    good = {"agent": {"w": torch.ones(3)}, "learner": {"optimizer": {"state": {0: {
        "exp_avg": torch.zeros(2), "step": torch.tensor(3)}}}}}
    save_checkpoint(tmp_path, good, step=1)
    bad = copy.deepcopy(good)
    bad["learner"]["optimizer"]["state"][0]["exp_avg"][1] = float("nan")
    assert nonfinite_entry(bad) == "learner.optimizer.state.0.exp_avg"
    assert nonfinite_entry({"grad": [torch.zeros(2), torch.tensor([float("-inf")])]}) == (
        "grad.1")
    assert nonfinite_entry(good) is None
    with pytest.raises(CheckpointError, match=r"^not writing the checkpoint for step 2: "
                                              r"learner.optimizer.state.0.exp_avg holds a "
                                              "non-finite value"):
        save_checkpoint(tmp_path, bad, step=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_000000000001.pt"]
