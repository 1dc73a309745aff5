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


def _conv_agent(**model_kw) -> Agent:
    torch.manual_seed(0)
    spec = EnvSpec(obs_shape=(3, 36, 36), obs_dtype=torch.uint8, num_actions=A, num_envs=2)
    model = ModelConfig(stem="nature", stem_out=32, core="elstm", hidden_size=8, **model_kw)
    return Agent(spec, model)


def _inputs(t: int = 3, b: int = 2):
    g = torch.Generator().manual_seed(2)
    obs = torch.randint(0, 256, (t, b, 3, 36, 36), dtype=torch.uint8, generator=g)
    return obs, torch.zeros(t, b), torch.zeros(t, b, dtype=torch.long), torch.zeros(
        t, b, dtype=torch.bool)


def test_bf16_autocast_covers_the_stem_and_heads_only():
    """model.amp=bf16: the stem's convolutions and the heads run in bfloat16; what the
    core and the loss see (x, logits, values) is float32, and close to the float32 agent."""
    plain, amp = _conv_agent(), _conv_agent(amp="bf16")
    amp.load_state_dict(plain.state_dict())
    seen = {}
    amp.stem.register_forward_hook(lambda m, i, o: seen.update(stem=o.dtype))
    amp.head.register_forward_hook(lambda m, i, o: seen.update(head=o[0].dtype))
    x = amp.core_input(*_inputs())
    h, _ = amp.core(x, amp.core.initial_state(2), torch.zeros(3, 2, dtype=torch.bool))
    logits, value = amp.heads(h)
    assert seen == {"stem": torch.bfloat16, "head": torch.bfloat16}
    assert x.dtype == h.dtype == logits.dtype == value.dtype == torch.float32
    want = plain.core_input(*_inputs())
    assert not torch.equal(x, want)
    torch.testing.assert_close(x, want, rtol=0.05, atol=0.05)


def test_bf16_agent_trains_with_rtrl():
    """One update of the bf16 agent: finite loss, every parameter gets a gradient, and
    the RTRL sensitivities stay float32."""
    from rtrl_rl.grad import make_grad

    agent = _conv_agent(amp="bf16")
    grad = make_grad("rtrl", agent.core, 2)
    obs, reward, prev_action, first = _inputs(4)
    x = agent.core_input(obs, reward, prev_action, first)
    h, _ = grad.unroll(x, agent.core.initial_state(2), first)
    logits, value = agent.heads(h)
    loss = logits.logsumexp(-1).sum() + value.square().sum()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in agent.parameters())
    assert all(s.dtype == torch.float32 for d in grad.sensitivities() for s in d.values())


def test_compiled_stem_matches_eager_and_survives_copies():
    """model.compile_stem: the same features as the eager stem; the agent still deep-copies
    and pickles (the compiled function is rebuilt in each process)."""
    import copy
    import pickle

    eager = _agent(True, True)
    compiled = Agent(EnvSpec(obs_shape=(OBS,), obs_dtype=torch.float32, num_actions=A,
                             num_envs=2),
                     ModelConfig(stem="mlp", stem_hidden=[5], core="elstm", hidden_size=4,
                                 prev_reward=True, prev_action=True, compile_stem=True))
    compiled.load_state_dict(eager.state_dict())
    obs = (torch.randn(3, 2, OBS), torch.tensor(REWARD), torch.tensor(PREV_ACTION),
           torch.tensor(FIRST, dtype=torch.bool))
    torch.testing.assert_close(compiled.core_input(*obs), eager.core_input(*obs),
                               rtol=1e-5, atol=1e-5)
    assert compiled._compiled_stem is not None
    twin = copy.deepcopy(compiled)
    assert twin._compiled_stem is None and set(twin.state_dict()) == set(eager.state_dict())
    assert pickle.loads(pickle.dumps(compiled))._compiled_stem is None


def test_first_input_joins_a_vector_observation_before_the_mlp_stem():
    torch.manual_seed(0)
    spec = EnvSpec(obs_shape=(OBS,), obs_dtype=torch.float32, num_actions=A, num_envs=2)
    model = ModelConfig(stem="mlp", stem_hidden=[5], core="lru", hidden_size=4,
                        prev_reward=False, first_input=True)
    agent = Agent(spec, model)
    assert agent.stem.net[0].in_features == OBS + 1
    obs = torch.randn(3, 2, OBS, generator=torch.Generator().manual_seed(1))
    first = torch.tensor(FIRST, dtype=torch.bool)
    x = agent.core_input(obs, torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long), first)
    with torch.no_grad():
        w, b = agent.stem.net[0].weight, agent.stem.net[0].bias
        flag = first.float().unsqueeze(-1)
        expected = torch.relu(torch.cat([obs, flag], -1) @ w.T + b)  # by hand
    torch.testing.assert_close(x, expected)


def test_first_input_after_an_image_stem_is_the_last_core_input():
    torch.manual_seed(0)
    spec = EnvSpec(obs_shape=(1, 36, 36), obs_dtype=torch.uint8, num_actions=A, num_envs=2)
    model = ModelConfig(stem="nature", stem_out=8, core="elstm", hidden_size=4,
                        prev_reward=True, first_input=True)
    agent = Agent(spec, model)
    obs = torch.zeros(3, 2, 1, 36, 36, dtype=torch.uint8)
    first = torch.tensor(FIRST, dtype=torch.bool)
    x = agent.core_input(obs, torch.ones(3, 2), torch.zeros(3, 2, dtype=torch.long), first)
    assert x.shape == (3, 2, 8 + 1 + 1)
    torch.testing.assert_close(x[..., -1], first.float())
    torch.testing.assert_close(x[..., -2], (~first).float())  # the reward, zeroed at starts
