"""Agent.core_input against hand-built tensors: the previous reward and action inputs."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.config import ModelConfig
from rtrl_rl.envs.base import EnvSpec
from rtrl_rl.models.agent import Agent

OBS, A = 3, 4
# [T=3, B=2]; stream 0 starts an episode at t=1, stream 1 at t=0 and t=2.
FIRST = [[0, 1], [1, 0], [0, 1]]
REWARD = [[2.5, -0.5], [0.75, -3.0], [-1.25, 0.25]]
PREV_ACTION = [[3, 1], [0, 2], [1, 3]]
# Hand-built: the clipped reward (clip 1) and the one-hot action, zero where first = 1.
EXPECTED_REWARD = [[1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]]
EXPECTED_ACTION = [
    [[0, 0, 0, 1], [0, 0, 0, 0]],
    [[0, 0, 0, 0], [0, 0, 1, 0]],
    [[0, 1, 0, 0], [0, 0, 0, 0]],
]


def _agent(prev_reward: bool, prev_action: bool) -> Agent:
    torch.manual_seed(0)
    spec = EnvSpec(obs_shape=(OBS,), obs_dtype=torch.float32, num_actions=A, num_envs=2)
    model = ModelConfig(stem="mlp", stem_hidden=[5], core="elstm", hidden_size=4,
                        prev_reward=prev_reward, prev_action=prev_action)
    return Agent(spec, model, reward_clip=1.0)


@pytest.mark.parametrize("prev_reward, prev_action",
                         [(True, True), (True, False), (False, True), (False, False)])
def test_core_input_zeroes_previous_reward_and_action_at_episode_starts(
        prev_reward: bool, prev_action: bool):
    agent = _agent(prev_reward, prev_action)
    obs = torch.randn(3, 2, OBS, generator=torch.Generator().manual_seed(1))
    x = agent.core_input(obs, torch.tensor(REWARD), torch.tensor(PREV_ACTION),
                         torch.tensor(FIRST, dtype=torch.bool))
    with torch.no_grad():
        w, b = agent.stem.net[0].weight, agent.stem.net[0].bias
        feats = torch.relu(obs @ w.T + b)  # the one-layer MLP stem, by hand
    parts = [feats]
    if prev_reward:
        parts.append(torch.tensor(EXPECTED_REWARD).unsqueeze(-1))
    if prev_action:
        parts.append(torch.tensor(EXPECTED_ACTION, dtype=torch.float32))
    expected = torch.cat(parts, -1)
    assert x.shape == (3, 2, 5 + prev_reward + A * prev_action)
    assert agent.core.layers[0].W_z.shape[1] == x.shape[-1]  # the core was sized for it
    torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-6)


def test_reward_clip_zero_feeds_the_raw_reward():
    agent = _agent(True, False)
    agent.reward_clip = 0.0
    x = agent.core_input(torch.zeros(3, 2, OBS), torch.tensor(REWARD),
                         torch.tensor(PREV_ACTION), torch.tensor(FIRST, dtype=torch.bool))
    expected = [[2.5, 0.0], [0.0, -3.0], [-1.25, 0.0]]
    torch.testing.assert_close(x[..., -1], torch.tensor(expected))
