"""Running a policy for whole episodes without learning: ``rtrl-eval`` on a checkpoint, and
``eval_episodes`` at the end of a training run on the policy in memory."""

from __future__ import annotations

import numpy as np
import torch

from rtrl_rl.envs.base import VecEnv
from rtrl_rl.models.agent import Agent


def _frame(obs: torch.Tensor) -> np.ndarray:
    """One stream's observation ``[C, H, W]`` uint8 -> an ``[H, W, 3]`` video frame."""
    arr = obs.numpy()
    img = arr.transpose(1, 2, 0) if arr.shape[0] == 3 else arr[-1][..., None].repeat(3, -1)
    return np.ascontiguousarray(img)


@torch.no_grad()
def run_episodes(agent: Agent, env: VecEnv, episodes: int, device: torch.device, seed: int,
                 greedy: bool = False, record_episodes: int = 0
                 ) -> tuple[list[float], list[int], list[np.ndarray]]:
    """Act in ``env``'s streams until ``episodes`` episodes have ended; returns their returns
    and lengths (the first ``episodes`` to end) and the frames of stream 0 over its first
    ``record_episodes`` episodes (image observations only). Closes ``env``."""
    num_envs = env.spec.num_envs
    ts = env.reset(seed=seed)
    state = agent.core.initial_state(num_envs, device=device)
    prev_action = torch.zeros(num_envs, *env.spec.action.shape, dtype=env.spec.action.dtype)
    returns: list[float] = []
    lengths: list[int] = []
    frames: list[np.ndarray] = []
    try:
        while len(returns) < episodes:
            if len(returns) < record_episodes:
                frames.append(_frame(ts.obs[0]))
            action, _, state = agent.act(ts.obs.to(device), ts.reward.to(device),
                                         prev_action.to(device), ts.first.to(device), state,
                                         greedy=greedy)
            prev_action = action.cpu()
            ts = env.step(prev_action)
            for i in ts.done.nonzero().flatten().tolist():
                returns.append(float(ts.episode_return[i]))
                lengths.append(int(ts.episode_length[i]))
    finally:
        env.close()
    return returns[:episodes], lengths[:episodes], frames


def summary(returns: list[float], lengths: list[int]) -> dict[str, float]:
    """Mean and spread of the returns, mean length."""
    return {"episodes": len(returns), "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "length_mean": float(np.mean(lengths))}
