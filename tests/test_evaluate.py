"""rtrl-eval on checkpoints of tiny runs: episodes, eval.json, a video, clear errors."""

from __future__ import annotations

import json

import pytest

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
