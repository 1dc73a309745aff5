"""The R2AC agent: stem -> [features, clipped prev reward, prev action, is-first] -> core ->
heads.

The core is driven by a temporal-gradient module during learning (``rtrl_rl.grad``) and
directly, without gradients, when acting. Built from the env's ``EnvSpec``; the action
distribution (``self.dist``, from ``policy_dist``) follows the env's action space, and the
policy head's output is that distribution's parameters (``dist_params`` in rollouts).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from rtrl_rl.envs.base import EnvSpec
from rtrl_rl.models.cells import Core
from rtrl_rl.models.heads import PolicyValueHead
from rtrl_rl.models.policy_dist import make_policy_dist
from rtrl_rl.models.registry import make_core
from rtrl_rl.models.stems import make_obs_stem, resolve_stem


class Agent(nn.Module):
    def __init__(self, spec: EnvSpec, cfg, reward_clip: float = 1.0) -> None:
        """``cfg``: a ``ModelConfig`` (stem, core, sizes, which extra inputs to feed)."""
        super().__init__()
        self.dist = make_policy_dist(spec.action)
        self.reward_clip = reward_clip
        self.use_prev_reward = cfg.prev_reward
        self.use_prev_action = cfg.prev_action
        first_input = bool(getattr(cfg, "first_input", False))
        # The flag joins a vector observation before the MLP stem, whose features can then
        # mark "this card, at the first step": a linear recurrence (RTU, LRU) cannot form
        # that product itself. After an image stem it joins the features.
        self.first_in_stem = first_input and resolve_stem(cfg.stem, spec) == "mlp"
        self.first_in_core = first_input and not self.first_in_stem
        stem_spec = spec
        if self.first_in_stem:
            stem_spec = replace(spec, obs_shape=(math.prod(spec.obs_shape) + 1,))
        self.stem = make_obs_stem(cfg, stem_spec)
        in_size = (self.stem.out_dim + int(cfg.prev_reward) + int(self.first_in_core)
                   + cfg.prev_action * self.dist.feature_size)
        self.core: Core = make_core(cfg.core, in_size, cfg.hidden_size, cfg.layers,
                                    **cfg.core_options())
        self.head = PolicyValueHead(self.core.output_size, self.dist.head_size)
        self.amp = getattr(cfg, "amp", "none")
        self.compile_stem = bool(getattr(cfg, "compile_stem", False))
        self._compiled_stem = None  # built lazily in each process; never pickled

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_compiled_stem"] = None  # compiled code neither pickles nor deep-copies
        return state

    def _autocast(self, like: torch.Tensor):
        """bf16 autocast on ``like``'s device, for the stem and heads under model.amp=bf16."""
        return torch.autocast(like.device.type, dtype=torch.bfloat16)

    def _stem(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.compile_stem:
            return self.stem(obs)
        if self._compiled_stem is None:  # kept out of the module tree and the state_dict
            object.__setattr__(self, "_compiled_stem", torch.compile(self.stem, dynamic=True))
        return self._compiled_stem(obs)

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
        """obs ``[T, B, *obs_shape]``, reward/first ``[T, B]``, prev_action
        ``[T, B, *action_shape]`` -> x ``[T, B, I]``.

        ``reward[t]`` and ``prev_action[t]`` are what led to ``obs[t]``; both read as zero at
        an episode start. ``model.first_input`` adds ``first[t]`` (1 at an episode's first
        step): as one more observation entry before an MLP stem, else as the last column.
        """
        t, b = obs.shape[:2]
        flat = obs.reshape(t * b, *obs.shape[2:])
        if self.first_in_stem:
            flat = torch.cat([flat.reshape(t * b, -1).float(),
                              first.reshape(t * b, 1).float()], -1)
        if self.amp == "none":
            feats = self._stem(flat)
        else:
            with self._autocast(obs):
                feats = self._stem(flat)
            feats = feats.float()  # the core and its sensitivities stay float32
        feats = feats.view(t, b, -1)
        parts = [feats]
        keep = (~first).to(feats.dtype)
        if self.use_prev_reward:
            parts.append((self.clip_reward(reward.to(feats.dtype)) * keep).unsqueeze(-1))
        if self.use_prev_action:
            acts = self.dist.action_features(prev_action).to(feats.dtype)
            parts.append(acts * keep.unsqueeze(-1))
        if self.first_in_core:
            parts.append(first.to(feats.dtype).unsqueeze(-1))
        return torch.cat(parts, -1)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h ``[..., H]`` -> distribution parameters ``[..., P]``, value ``[...]`` (float32
        under amp)."""
        if self.amp == "none":
            out, value = self.head(h)
            return self.dist(out), value
        with self._autocast(h):
            out, value = self.head(h)
        return self.dist(out.float()), value.float()

    def step(
        self,
        obs: torch.Tensor,
        reward: torch.Tensor,
        prev_action: torch.Tensor,
        first: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's forward for one step of B streams: obs ``[B, ...]``, prev_action
        ``[B, *action_shape]``, the rest ``[B]``, state ``[B, D]`` -> distribution
        parameters ``[B, P]`` and the state after ``obs``."""
        x = self.core_input(obs[None], reward[None], prev_action[None], first[None])
        h, state = self.core(x, state, first[None])
        params, _ = self.heads(h[0])
        return params, state

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        reward: torch.Tensor,
        prev_action: torch.Tensor,
        first: torch.Tensor,
        state: torch.Tensor,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step for B streams: obs ``[B, ...]``, prev_action ``[B, *action_shape]``,
        the rest ``[B]``, state ``[B, D]``.

        Returns action ``[B, *action_shape]``, distribution parameters ``[B, P]`` and the
        state after ``obs``. Actions are sampled with ``generator`` (default: torch's global
        one); ``greedy`` takes the distribution's mode.
        """
        params, state = self.step(obs, reward, prev_action, first, state)
        action = self.dist.mode(params) if greedy else self.dist.sample(params, generator)
        return action, params, state
