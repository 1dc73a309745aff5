"""Atari through ALE's native vectorized backend (``ale_py.vector_env.AtariVectorEnv``).

Observations: ``uint8 [B, frame_stack, frame_size, frame_size]`` grayscale, max-pooled over the
last two emulator frames of each action repeat (``[B, 4, 84, 84]`` by default).

Auto-reset: the backend runs in ``SameStep`` mode, which is ``base.py``'s convention exactly:
the step on which an episode ends returns that episode's last reward together with the first
observation of the next episode (the final observation goes to ``info`` and is dropped), so
``first = terminated | truncated`` with no bookkeeping. Rewards come from the backend with
its clipping disabled, so ``reward`` and ``episode_return`` are raw game scores (the learner
clips).

``episodic_life``: the backend signals every life loss as a termination without resetting
the game (``life_loss_info``). Such a step has ``first = 1`` (the learner neither bootstraps
across it nor carries the recurrent state over it, as in DeepMind's episodic-life wrapper), but
``done = 0``: ``done``, ``episode_return`` and ``episode_length`` describe whole games, so
logged scores stay comparable to published ones. A termination is a game over, not a life
loss, when the lives counter did not drop (after a game over it is back at the start value).

``tests/envs/test_atari_reference.py`` checks the stream against gymnasium's
``AtariPreprocessing`` + ``FrameStackObservation``; the deliberate differences (no-op count,
FIRE at reset, zero padding of the first stack, what ``max_episode_frames`` counts) are listed
there and in ``docs/guide/environments.md``.
"""

from __future__ import annotations

import numpy as np
import torch

from rtrl_rl.envs.base import EnvSpec, EpisodeTracker, TimeStep, check_actions
from rtrl_rl.envs.config import AtariConfig
from rtrl_rl.envs.seeding import SeedStream


class AtariEnv:
    """``VecEnv`` over ``num_envs`` copies of one Atari game; see the module docstring."""

    def __init__(self, cfg: AtariConfig, num_envs: int, seed: int, split: str = "train") -> None:
        from ale_py.vector_env import AtariVectorEnv

        self.cfg = cfg
        self._seeds = SeedStream(seed, split)
        self._env = AtariVectorEnv(
            cfg.game,
            num_envs,
            num_threads=cfg.num_threads,
            max_num_frames_per_episode=cfg.max_episode_frames,
            repeat_action_probability=float(cfg.sticky_actions),
            full_action_space=cfg.full_action_space,
            autoreset_mode="SameStep",
            img_height=cfg.frame_size,
            img_width=cfg.frame_size,
            grayscale=True,
            stack_num=cfg.frame_stack,
            frameskip=cfg.frameskip,
            maxpool=True,
            noop_max=cfg.noop_max,
            episodic_life=False,  # the backend's version resets the whole game on a life loss
            life_loss_info=cfg.episodic_life,
            reward_clipping=False,
            use_fire_reset=cfg.fire_reset,
        )
        self.spec = EnvSpec(
            obs_shape=(cfg.frame_stack, cfg.frame_size, cfg.frame_size),
            obs_dtype=torch.uint8,
            num_actions=int(self._env.single_action_space.n),
            num_envs=num_envs,
        )
        self.frames_per_step = cfg.frameskip  # runners count emulator frames (200M = 50M steps)
        self._tracker = EpisodeTracker(num_envs)
        self._lives = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int | None = None) -> TimeStep:
        """All streams start new episodes: ``first = 1``, ``done = 0``."""
        obs, info = self._env.reset(seed=self._seeds.next(seed))
        self._check_order(info)
        self._lives = np.asarray(info["lives"], dtype=np.int64)
        self._tracker.reset()
        return TimeStep.at_reset(torch.from_numpy(np.array(obs, dtype=np.uint8)))

    def step(self, actions: torch.Tensor) -> TimeStep:
        """``actions``: int ``[B]``. Returns the next ``TimeStep`` (auto-reset, same step)."""
        b = self.spec.num_envs
        check_actions(actions, b)
        acts = actions.detach().to("cpu", torch.int64).numpy()
        obs, reward, terminated, truncated, info = self._env.step(acts)
        self._check_order(info)
        lives = np.asarray(info["lives"], dtype=np.int64)
        ended = np.logical_or(terminated, truncated)
        if self.cfg.episodic_life:
            life_lost = terminated & ~truncated & (lives < self._lives)
            game_over = ended & ~life_lost
        else:
            game_over = ended
        self._lives = lives
        reward_t = torch.from_numpy(np.asarray(reward, dtype=np.float32))
        done = torch.from_numpy(game_over)
        ep_ret, ep_len = self._tracker.update(reward_t, done)
        return TimeStep(
            obs=torch.from_numpy(np.array(obs, dtype=np.uint8)),  # copy: buffers are reused
            reward=reward_t,
            first=torch.from_numpy(ended),
            done=done,
            episode_return=ep_ret,
            episode_length=ep_len,
        )

    def close(self) -> None:
        self._env.close()

    def _check_order(self, info: dict) -> None:
        # With batch_size == num_envs the backend returns streams in order; guard the assumption.
        env_id = info.get("env_id")
        if env_id is not None and not np.array_equal(env_id, np.arange(self.spec.num_envs)):
            raise RuntimeError("ALE vector env returned streams out of order")
