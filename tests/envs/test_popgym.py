"""POPGym's tasks through the gymnasium adapter: every observation space the suite uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtrl_rl.bench.random_policy import random_actions
from rtrl_rl.envs import make_env

TASKS = {  # task: (flattened observation size, actions, episode length)
    "RepeatPreviousEasy": (4, 4, 51), "RepeatFirstEasy": (4, 4, 51),
    "PositionOnlyCartPoleEasy": (2, 2, None), "CountRecallEasy": (4, 27, 51),
    "AutoencodeEasy": (6, 4, 103), "HigherLowerEasy": (13, 2, 51),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_popgym_task_runs_whole_episodes(task):
    obs_dim, actions, length = TASKS[task]
    env = make_env({"family": "gym", "id": f"popgym:popgym-{task}-v0"}, 3, seed=0)
    assert env.spec.obs_shape == (obs_dim,) and env.spec.action.nvec == (actions,)
    ts = env.reset()
    assert ts.first.all()
    rng = np.random.default_rng(0)
    returns, lengths = [], []
    for _ in range(600):
        ts = env.step(random_actions(env.spec.action, 3, rng))
        assert torch.isfinite(ts.obs).all() and ts.obs.shape == (3, obs_dim)
        returns += ts.episode_return[ts.done].tolist()
        lengths += ts.episode_length[ts.done].tolist()
    env.close()
    assert returns and all(-1.0 - 1e-5 <= r <= 1.0 + 1e-5 for r in returns)  # POPGym's scale
    if length is not None:
        assert set(lengths) == {length}
