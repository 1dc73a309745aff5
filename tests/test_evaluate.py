"""rtrl-eval on checkpoints of tiny runs: episodes, eval.json, a video, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from rtrl_rl.evaluate import main
from rtrl_rl.runners.loop import train
from tests.runners.helpers import make_cfg


def test_eval_reports_episodes_and_writes_json(tmp_path, capsys):
    train(make_cfg(tmp_path, "env.delay=3", "max_updates=2", "runner.total_frames=10000"))
    main([str(tmp_path), "--episodes", "6", "--num-envs", "3"])
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["episodes"] == 6 and -1.0 <= result["return_mean"] <= 1.0
    assert "6 episodes" in capsys.readouterr().out


def test_eval_writes_a_gif_of_procgen_unseen_levels(tmp_path):
    train(make_cfg(tmp_path, "experiment=procgen_r2ac", "env.game=bigfish",
                   "env.distribution_mode=easy", "model.hidden_size=16", "model.stem_out=16",
                   "runner.num_envs=2", "runner.unroll=4", "max_updates=1"))
    gif = tmp_path / "first.gif"
    main([str(tmp_path), "--episodes", "1", "--num-envs", "2", "--video", str(gif)])
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert json.loads((tmp_path / "eval.json").read_text())["split"] == "eval"


def test_eval_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint" in err[0]


class _LevelSpy:
    """Wraps a ProcgenLib: records its level range and the level seeds it plays."""

    def __init__(self, real, kwargs: dict, log: list[dict]) -> None:
        self._env = real
        self._record = {"start_level": kwargs.get("start_level"),
                        "num_levels": kwargs.get("num_levels"), "level_seeds": set()}
        log.append(self._record)

    def observe(self):
        out = self._env.observe()
        self._record["level_seeds"].update(int(i["level_seed"]) for i in self._env.get_info())
        return out

    def __getattr__(self, name: str):
        return getattr(self._env, name)


def test_eval_split_selects_the_procgen_levels_played(tmp_path, monkeypatch):
    """--split train plays the training levels [100, 103); --split eval only levels from
    103 upward, never seen in training."""
    from rtrl_rl.envs import procgen as adapter
    from rtrl_rl.envs.config import INT32_MAX

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # a tiny conv net: one thread is much faster
        played = _levels_played_per_split(tmp_path, monkeypatch, adapter)
    finally:
        torch.set_num_threads(threads)
    start, count, seeds = played["train"]
    assert (start, count) == (100, 3)
    assert seeds and seeds <= {100, 101, 102}
    start, count, seeds = played["eval"]
    assert (start, count) == (103, INT32_MAX - 103)
    assert seeds and min(seeds) >= 103


def _levels_played_per_split(tmp_path, monkeypatch, adapter) -> dict[str, tuple]:
    """Train one update on levels [100, 103), then evaluate on each split with the backend
    spied on: ``{split: (start_level, num_levels, level seeds played)}``."""
    train(make_cfg(tmp_path, "experiment=procgen_r2ac", "env.game=bigfish",
                   "env.distribution_mode=easy", "env.start_level=100", "env.num_levels=3",
                   "model.stem=nature", "model.hidden_size=8", "model.stem_out=8",
                   "runner.num_envs=2", "runner.unroll=2", "max_updates=1", "torch_threads=1"))
    real_cls = adapter.ProcgenLib
    log: list[dict] = []
    monkeypatch.setattr(adapter, "ProcgenLib",
                        lambda **kw: _LevelSpy(real_cls(**kw), kw, log))
    played = {}
    for split in ("train", "eval"):
        log.clear()
        main([str(tmp_path), "--episodes", "2", "--num-envs", "2", "--split", split,
              "--json", str(tmp_path / f"{split}.json")])
        assert json.loads((tmp_path / f"{split}.json").read_text())["split"] == split
        assert log, "evaluation built no ProcGen env"
        played[split] = (log[-1]["start_level"], log[-1]["num_levels"],
                         set().union(*(r["level_seeds"] for r in log)))
    return played
