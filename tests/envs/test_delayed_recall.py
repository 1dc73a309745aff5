"""Delayed recall: exact episode structure, equality with a one-stream-at-a-time reference."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.envs import DelayedRecallConfig, VecEnv, make_env
from rtrl_rl.envs.seeding import derive_seed


class ReferenceDelayedRecall:
    """The task written the obvious way: Python scalars, a loop over streams. It consumes the
    generator exactly like the vectorized env (one ``[B]`` draw of cues, and of delays when
    they vary, per reset and per step; with distractors, one ``[B]`` draw of shown values
    per observation)."""

    def __init__(self, k: int, d_min: int, d_max: int, b: int, seed: int,
                 distractors: bool = False, dense: bool = False, flag: bool = False) -> None:
        self.k, self.d_min, self.d_max, self.b = k, d_min, d_max, b
        self.distractors, self.dense, self.flag = distractors, dense, flag
        self.gen = torch.Generator().manual_seed(derive_seed(seed, "train", 0))
        cues, delays = self._draw()
        self.streams = [{"t": 0, "cue": cues[i], "delay": delays[i], "ret": 0.0, "len": 0}
                        for i in range(b)]
        self.noise = self._noise()

    def _draw(self):
        cues = torch.randint(self.k, (self.b,), generator=self.gen).tolist()
        if self.d_max > self.d_min:
            delays = torch.randint(self.d_min, self.d_max + 1, (self.b,), generator=self.gen)
            return cues, delays.tolist()
        return cues, [self.d_min] * self.b

    def _noise(self):
        if not self.distractors:
            return [None] * self.b
        return torch.randint(self.k, (self.b,), generator=self.gen).tolist()

    def observations(self):
        return [self.obs(s, v) for s, v in zip(self.streams, self.noise, strict=True)]

    def obs(self, s, noise=None):
        row = [0.0] * (self.k + 1 + self.flag)
        if s["t"] == 0:
            row[s["cue"]] = 1.0
            if self.flag:
                row[self.k + 1] = 1.0
        elif noise is not None and s["t"] <= s["delay"]:
            row[noise] = 1.0
        if s["t"] == s["delay"] + 1:
            row[self.k] = 1.0
        return row

    def step(self, actions):
        cues, delays = self._draw()
        out = []
        for i, s in enumerate(self.streams):
            done = s["t"] == s["delay"] + 1
            score = 1.0 if actions[i] == s["cue"] else -1.0
            if self.dense:
                reward = float(torch.tensor(score / (s["delay"] + 2), dtype=torch.float32))
            else:
                reward = score if done else 0.0
            s["ret"] = float(torch.tensor(s["ret"], dtype=torch.float32)
                             + torch.tensor(reward, dtype=torch.float32))
            s["len"] += 1
            ep = (s["ret"], s["len"]) if done else (0.0, 0)
            if done:
                s.update(t=0, cue=cues[i], delay=delays[i], ret=0.0, len=0)
            else:
                s["t"] += 1
            out.append([None, reward, done, ep])
        self.noise = self._noise()
        for o, row in zip(out, self.observations(), strict=True):
            o[0] = row
        return out


@pytest.mark.parametrize("delay, delay_max, distractors, dense, flag", [
    (0, None, False, False, False), (3, None, False, False, False),
    (2, 7, False, False, False), (3, None, True, False, False), (2, 7, True, True, False),
    (4, None, False, True, False), (3, None, True, False, True), (0, 4, False, False, True)])
def test_matches_the_reference_loop(delay, delay_max, distractors, dense, flag):
    b, k, steps = 6, 3, 60
    env = make_env({"family": "delayed_recall", "num_cues": k, "delay": delay,
                    "delay_max": delay_max, "distractors": distractors,
                    "dense_reward": dense, "cue_flag": flag}, b, seed=11)
    assert isinstance(env, VecEnv) and env.spec.obs_shape == (k + 1 + flag,)
    ref = ReferenceDelayedRecall(k, delay, delay if delay_max is None else delay_max, b, seed=11,
                                 distractors=distractors, dense=dense, flag=flag)
    ts = env.reset()
    assert ts.obs.tolist() == ref.observations()
    act_gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        actions = torch.randint(k, (b,), generator=act_gen)
        ts = env.step(actions)
        out = ref.step(actions.tolist())
        assert ts.obs.tolist() == [o[0] for o in out]
        assert ts.reward.tolist() == [o[1] for o in out]
        assert ts.first.tolist() == [o[2] for o in out] == ts.done.tolist()
        assert ts.episode_return.tolist() == [o[3][0] for o in out]
        assert ts.episode_length.tolist() == [o[3][1] for o in out]


def test_episode_structure_and_shapes():
    d, k, b = 4, 4, 5
    env = make_env({"family": "delayed_recall", "num_cues": k, "delay": d}, b, seed=0)
    assert env.spec.obs_shape == (k + 1,) and env.spec.num_actions == k
    ts = env.reset()
    assert ts.obs.shape == (b, k + 1) and ts.obs.dtype == torch.float32
    assert ts.first.all() and not ts.done.any()
    cue = ts.obs[:, :k].argmax(1)
    assert (ts.obs[:, :k].sum(1) == 1).all() and (ts.obs[:, k] == 0).all()
    for t in range(1, d + 2):  # blank steps, then the query
        ts = env.step(torch.zeros(b, dtype=torch.int64))
        assert not ts.first.any() and (ts.reward == 0).all()
        assert (ts.obs[:, :k] == 0).all()
        assert (ts.obs[:, k] == (1.0 if t == d + 1 else 0.0)).all()
    ts = env.step(cue)  # answer correctly at the query
    assert ts.first.all() and ts.done.all()
    assert (ts.reward == 1).all() and (ts.episode_return == 1).all()
    assert (ts.episode_length == d + 2).all()
    assert (ts.obs[:, :k].sum(1) == 1).all()  # the next cue is already shown
    wrong = (ts.obs[:, :k].argmax(1) + 1) % k
    for _ in range(d + 1):
        ts = env.step(wrong)
    ts = env.step(wrong)
    assert ts.done.all() and (ts.reward == -1).all() and (ts.episode_length == d + 2).all()


def test_distractors_fill_the_delay_and_the_cue_stays_first():
    d, k, b = 6, 4, 64
    env = make_env({"family": "delayed_recall", "num_cues": k, "delay": d,
                    "distractors": True}, b, seed=2)
    ts = env.reset()
    cue = ts.obs[:, :k].argmax(1)
    shown = []
    for _ in range(d):
        ts = env.step(torch.zeros(b, dtype=torch.int64))
        assert (ts.obs[:, :k].sum(1) == 1).all() and (ts.obs[:, k] == 0).all()
        shown.append(ts.obs[:, :k].argmax(1))
    ts = env.step(torch.zeros(b, dtype=torch.int64))
    assert (ts.obs[:, :k] == 0).all() and (ts.obs[:, k] == 1).all()  # the query is clean
    shown = torch.stack(shown)
    assert (shown != cue).any(0).all()  # distractors are not the cue repeated
    assert set(shown.flatten().tolist()) == set(range(k))
    ts = env.step(cue)
    assert (ts.reward == 1).all()


@pytest.mark.parametrize("distractors", [False, True])
def test_dense_reward_scores_every_action(distractors):
    d, k, b = 3, 4, 8
    env = make_env({"family": "delayed_recall", "num_cues": k, "delay": d,
                    "distractors": distractors, "dense_reward": True}, b, seed=0)
    cue = env.reset().obs[:, :k].argmax(1)
    wrong = (cue + 1) % k
    half = torch.where(torch.arange(b) < b // 2, cue, wrong)  # half right, half wrong
    for _ in range(d + 2):
        ts = env.step(half)
        assert torch.allclose(ts.reward.abs(), torch.full((b,), 1.0 / (d + 2)))
    assert ts.done.all()
    assert torch.allclose(ts.episode_return, torch.where(torch.arange(b) < b // 2, 1.0, -1.0))


@pytest.mark.parametrize("dense", [False, True])
def test_random_policy_scores_chance(dense):
    env = make_env({"family": "delayed_recall", "num_cues": 4, "delay": 0,
                    "dense_reward": dense, "distractors": dense}, 256, seed=1)
    env = make_env({"family": "delayed_recall", "num_cues": 4, "delay": 0}, 256, seed=1)
    env.reset()
    gen = torch.Generator().manual_seed(1)
    returns = []
    for _ in range(40):
        ts = env.step(torch.randint(4, (256,), generator=gen))
        returns.append(ts.episode_return[ts.done])
    assert abs(torch.cat(returns).mean().item() + 0.5) < 0.05


def test_seeding_repeats_and_splits_differ():
    cfg = DelayedRecallConfig(num_cues=8, delay=1, delay_max=5)

    def run(seed, split="train", reset_seed=None):
        env = make_env(cfg, 4, seed=seed, split=split)
        obs = [env.reset(seed=reset_seed).obs]
        for _ in range(30):
            obs.append(env.step(torch.zeros(4, dtype=torch.int64)).obs)
        return torch.stack(obs)

    assert torch.equal(run(3), run(3))
    assert torch.equal(run(3), run(99, reset_seed=3))  # reset(seed) == a fresh env with it
    assert not torch.equal(run(3), run(4))
    assert not torch.equal(run(3), run(3, split="eval"))


def test_step_validates_actions():
    env = make_env({"family": "delayed_recall"}, 3, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(4, dtype=torch.int64))


def test_state_dict_continues_exactly():
    cfg = {"family": "delayed_recall", "num_cues": 5, "delay": 2, "delay_max": 6}
    gen = torch.Generator().manual_seed(0)
    actions = [torch.randint(5, (3,), generator=gen) for _ in range(60)]
    a = make_env(cfg, 3, seed=0)
    a.reset()
    for x in actions[:17]:
        a.step(x)
    b = make_env(cfg, 3, seed=1)
    b.load_state_dict(a.state_dict())
    for x in actions[17:]:
        ta, tb = a.step(x), b.step(x)
        for f in ("obs", "reward", "first", "episode_return", "episode_length"):
            assert torch.equal(getattr(ta, f), getattr(tb, f)), f
