"""The R2AC agent: stem -> [features, clipped prev reward, prev action] -> core -> heads.

The core is driven by a temporal-gradient module during learning (``rtrl_rl.grad``) and
directly, without gradients, when acting. Built from the env's ``EnvSpec``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rtrl_rl.envs.base import EnvSpec
from rtrl_rl.models.cells import Core, make_core
from rtrl_rl.models.heads import PolicyValueHead
from rtrl_rl.models.stems import make_stem


class Agent(nn.Module):
    def __init__(self, spec: EnvSpec, cfg, reward_clip: float = 1.0) -> None:
        """``cfg``: a ``ModelConfig`` (stem, core, sizes, which extra inputs to feed)."""
        super().__init__()
        self.num_actions = spec.num_actions
        self.reward_clip = reward_clip
        self.use_prev_reward = cfg.prev_reward
        self.use_prev_action = cfg.prev_action
        if cfg.stem == "mlp":
            self.stem = make_stem("mlp", spec.obs_shape, hidden=tuple(cfg.stem_hidden))
        else:
            self.stem = make_stem(cfg.stem, spec.obs_shape, out_dim=cfg.stem_out)
        in_size = self.stem.out_dim + int(cfg.prev_reward) + cfg.prev_action * spec.num_actions
        self.core: Core = make_core(cfg.core, in_size, cfg.hidden_size, cfg.layers,
                                    cfg.forget_bias)
        self.head = PolicyValueHead(self.core.output_size, spec.num_actions)

    def clip_reward(self, r: torch.Tensor) -> torch.Tensor:
        c = self.reward_clip
        return r.clamp(-c, c) if c > 0 else r

    def core_input(
        self,
        obs: torch.Tensor,
        reward: torch.Tensor,
        prev_action: torch.Tensor,
        first: torch.Tensor,
    ) -> torch.Tensor:
        """obs ``[T, B, *obs_shape]``, reward/prev_action/first ``[T, B]`` -> x ``[T, B, I]``.

        ``reward[t]`` and ``prev_action[t]`` are what led to ``obs[t]``; both read as zero at
        an episode start.
        """
        t, b = obs.shape[:2]
        feats = self.stem(obs.reshape(t * b, *obs.shape[2:])).view(t, b, -1)
        parts = [feats]
        keep = (~first).to(feats.dtype)
        if self.use_prev_reward:
            parts.append((self.clip_reward(reward.to(feats.dtype)) * keep).unsqueeze(-1))
        if self.use_prev_action:
            onehot = F.one_hot(prev_action.long(), self.num_actions).to(feats.dtype)
            parts.append(onehot * keep.unsqueeze(-1))
        return torch.cat(parts, -1)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h ``[..., H]`` -> logits ``[..., A]``, value ``[...]``."""
        return self.head(h)

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        reward: torch.Tensor,
        prev_action: torch.Tensor,
        first: torch.Tensor,
        state: torch.Tensor,
        greedy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step for B streams: obs ``[B, ...]``, the rest ``[B]``, state ``[B, D]``.

        Returns action ``[B]`` (long), logits ``[B, A]`` and the state after ``obs``.
        """
        x = self.core_input(obs[None], reward[None], prev_action[None], first[None])
        h, state = self.core(x, state, first[None])
        logits, _ = self.heads(h[0])
        if greedy:
            action = logits.argmax(-1)
        else:
            action = torch.multinomial(F.softmax(logits.float(), -1), 1).squeeze(-1)
        return action, logits, state
