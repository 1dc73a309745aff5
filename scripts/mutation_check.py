"""Mutation check: do the tests catch a list of known, realistic one-line bugs?

For each mutation (the list below) the repo (rtrl_rl/, tests/, configs/, scripts/,
pyproject.toml) is copied into a temp dir, the mutation's exact text edits are applied (an
``old`` that does not occur exactly ``count`` times is an error: the entry has rotted and must
be updated), and its targeted tests run there with ``pytest -x -q -p no:cacheprovider`` under
the repo's default markers (pyproject.toml). Outcomes:

    caught     the tests failed                 survived  the tests passed
    timeout    past the timeout; counts as caught only for entries flagged timeout_caught
    error      pytest exited with a code other than 0 and 1 (collection error, no tests...)
    baseline   the targeted tests fail without the mutation too: not run

Everything runs from one snapshot of the working tree, taken at the start. The copies are
imported instead of the editable install (cwd and PYTHONPATH; checked for every copy). The
union of the targeted tests first runs once on the unmutated snapshot. Exit status: 0 all
caught, 1 something survived (or error / uncounted timeout), 2 stale entries or baseline
failures.

    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --only G1,A2 --jobs 2 --json mutation_check.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("rtrl_rl", "tests", "configs", "scripts", "pyproject.toml", "README.md")
PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")


@dataclass(frozen=True)
class Edit:
    file: str
    old: str
    new: str
    count: int = 1  # how many times ``old`` must occur; every occurrence is replaced


@dataclass(frozen=True)
class Mutation:
    id: str
    description: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest node ids or files, relative to the repo root
    timeout_caught: bool = False  # a hang is this bug's natural symptom
    requires: str = ""  # a module its tests need (they skip without it): else not run


def mut(id_: str, file: str, old: str, new: str, description: str, *tests: str,
        **kw) -> Mutation:
    """A mutation made of one edit."""
    return Mutation(id_, description, (Edit(file, old, new),), tests, **kw)


# Test targets, named once so that re-pointing a mutation is a one-word change.
# (Before tests/algos/test_impala.py, M01-M05 could only point at the ~100 s learning runs of
# tests/runners/test_learning.py, which all five survive.)
LEARNER_TESTS = "tests/algos/test_impala.py"
RESUME = "tests/runners/test_resume.py::test_resume_matches_uninterrupted_run"
TILING = "tests/runners/test_async.py::test_batches_tile_time_per_stream"
SIGKILL_WORKER = ("tests/runners/test_async.py::"
                  "test_sigkilled_worker_is_restarted_with_fresh_streams")
GUARDS, FAULTS = "tests/runners/test_run_guards.py", "tests/runners/test_checkpoint_faults.py"
LEARNER_BASE = "rtrl_rl/algos/learner.py"
LEARNER, ACTOR, AGENT = "rtrl_rl/algos/impala.py", "rtrl_rl/runners/actor.py", \
    "rtrl_rl/models/agent.py"
ASYNC = "rtrl_rl/runners/async_runner.py"
INFER = "rtrl_rl/runners/inference_server.py"
FACTORS, VTRACE = "rtrl_rl/grad/factors.py", "rtrl_rl/algos/vtrace.py"
DIST, SPACES = "rtrl_rl/models/policy_dist.py", "rtrl_rl/envs/gym_spaces.py"
ATARI, ATARI_REF = "rtrl_rl/envs/atari.py", "tests/envs/test_atari_reference.py"
PROCGEN, PROCGEN_REF = "rtrl_rl/envs/procgen.py", "tests/envs/test_procgen_reference.py"
PAIR, CELL_EXACT = "rtrl_rl/models/pair_cells.py", "tests/grad/test_exactness_cells.py"

PPO_TESTS = "tests/algos/test_ppo.py"
RANKS_TESTS = "tests/runners/test_distributed.py"
TRITON = "tests/grad/test_triton_kernels.py"
DIST_EQUAL = (f"{RANKS_TESTS}::"
              "test_two_ranks_step_like_one_process_over_the_union_of_their_streams")
DIST_RESUME = f"{RANKS_TESTS}::test_two_rank_resume_is_bit_for_bit_and_needs_the_same_world_size"
DIST_SEEDS = f"{RANKS_TESTS}::test_rank_seeds_differ_and_rank_zero_keeps_the_run_seed"

MUTATIONS: list[Mutation] = [
    mut("M01", LEARNER,
        "log_rhos = log_pi_a - agent.dist.log_prob(rollout.dist_params[:-1], actions)",
        "log_rhos = agent.dist.log_prob(rollout.dist_params[:-1], actions) - log_pi_a",
        "V-trace log-ratios with behaviour and target policies swapped", LEARNER_TESTS),
    mut("M02", LEARNER, "(~rollout.first[1:])", "(~rollout.first[:-1])",
        "discounts from first[:-1] instead of first[1:]", LEARNER_TESTS),
    mut("M03", ACTOR, "core_state = self.state_prev.clone()", "core_state = self.state.clone()",
        "rollout core_state taken after entry 0 instead of before",
        "tests/runners/test_actor.py"),
    mut("M04", AGENT, "parts.append((self.clip_reward(reward.to(feats.dtype)) * keep)",
        "parts.append((self.clip_reward(reward.to(feats.dtype)))",
        "previous reward not zeroed at an episode start", "tests/models/test_agent.py"),
    mut("M05", LEARNER_BASE,
        "clip_grads_with_norm_(self.params, self.cfg.max_grad_norm, grad_norm)",
        'clip_grads_with_norm_(self.params, float("inf"), grad_norm)',
        "grad-norm clipping disabled (infinite max norm)", LEARNER_TESTS),
    Mutation("M06", "/255 pixel scaling removed from both CNN stems (ImpalaResNet, NatureCNN)",
             (Edit("rtrl_rl/models/stems.py", ".to(_param_dtype(self)) / 255.0",
                   ".to(_param_dtype(self))", count=2),),
             ("tests/models/test_stems.py",)),
    # Both ways the pipe-per-worker runner notices a death: its sentinel, and EOF on its pipe.
    Mutation("M07", "async runner: a worker that dies (exit or broken pipe) is never restarted",
             (Edit(ASYNC, "self._restart(w, _exit_reason(self.procs[w].exitcode))", "pass"),
              Edit(ASYNC, "self._restart(w, _exit_reason(self._exitcode(w)))", "pass")),
             (SIGKILL_WORKER,), timeout_caught=True),
    mut("M08", "rtrl_rl/evaluate.py", "make_env(cfg.env, num_envs, seed, split=split)",
        'make_env(cfg.env, num_envs, seed, split="eval")',
        "rtrl-eval ignores --split (always the eval levels)", "tests/test_evaluate.py"),
    mut("M09", "rtrl_rl/runners/loop_state.py", 'self.returns.extend(part["returns"])', "pass",
        "resume does not restore the window of episode returns", RESUME),
    mut("M10", "rtrl_rl/compare.py", "mean = curves.mean(axis=0)", "mean = curves[0]",
        "rtrl-compare curve mean taken from the first run only", "tests/test_compare.py"),
    # Our own: grad/
    mut("G1", FACTORS, "p0 = p[0] * g[0]", "p0 = p[0]",
        "chunk factors (PyTorch form): carried-sensitivity decay misses step 0",
        "tests/grad/test_factors.py"),
    mut("G2", FACTORS, "+ w_f[n] * phi[n]) * k", "+ w_f[n] * phi[n])",
        "fused eLSTM kernel: sensitivities not reset at episode starts",
        "tests/grad/test_factors.py", "tests/grad/test_exactness.py"),
    mut("G3", "rtrl_rl/grad/rtrl.py", "g_vec = (s_vec * g[:, None]).sum(0)",
        "g_vec = (s_vec * g[:, None]).mean(0)",
        "RTRL injection: vector-parameter credit averaged over streams, not summed",
        "tests/grad/test_exactness.py"),
    mut("G4", "rtrl_rl/grad/bptt.py", "first, detach_every_step=True)",
        "first, detach_every_step=False)",
        "one_step: recurrence not cut at every step (it silently becomes BPTT)",
        "tests/grad/test_exactness.py"),
    mut("G5", "rtrl_rl/grad/base.py", "            return None  # every stream, in order",
        "            return stream_ids  # every stream, in order",
        "RTRL: a whole in-order batch takes the slower gathered path (training's batches)",
        "tests/grad/test_stream_ids.py"),
    # Our own: algos/
    mut("A1", VTRACE, "cs = lambda_ * torch.clamp(rhos, max=1.0)",
        "cs = torch.clamp(rhos, max=1.0)", "V-trace: lambda ignored in the trace coefficients",
        "tests/algos/test_vtrace.py"),
    mut("A2", VTRACE, "pg_rhos * (rewards + discounts * vs_tp1 - values)",
        "pg_rhos * (rewards + discounts * values_tp1 - values)",
        "V-trace: advantages bootstrap from V(x_t+1) instead of v_t+1",
        "tests/algos/test_vtrace.py"),
    mut("A3", "rtrl_rl/algos/impala_losses.py", "base + entropy_cost * ent",
        "base - entropy_cost * ent",
        "IMPALA loss: entropy term with the wrong sign (entropy penalised)",
        "tests/algos/test_impala_losses.py"),
    # Our own: runners/
    mut("R1", ACTOR, "v[0] = v[-1]", "v[0] = v[-2]",
        "actor: entry T-1 instead of T carried over as the next rollout's entry 0", TILING),
    mut("R2", ACTOR, 'state["state"].clone(), state["state_prev"].clone()',
        'state["state_prev"].clone(), state["state"].clone()',
        "actor resume: state and state_prev restored swapped", RESUME),
    mut("R14", ACTOR, "self.buf[RENAMED.get(k, k)][0] = v", "self.buf[k][0] = v",
        "actor resume: a checkpoint that names dist_params by its old name (logits) fails",
        "tests/runners/test_actor.py::test_a_saved_actor_state_with_the_old_field_name_resumes"),
    mut("R3", "rtrl_rl/runners/sync.py", "        self.actor.policy_version = policy_version\n",
        "", "sync runner: rollouts not stamped with the learner's policy version",
        "tests/runners/test_sync.py"),
    # Our own: the fault handling around the runners
    mut("F1", "rtrl_rl/runners/weights.py", "if int(self.meta[seq]) == before:", "if True:",
        "weight board: a reader keeps a copy the writer overwrote meanwhile (torn weights)",
        "tests/runners/test_weights.py::test_concurrent_reads_are_never_torn"),
    mut("F2", "rtrl_rl/runners/weights.py", "b, seq = v % 2, 1 + v % 2\n        self.meta[seq]",
        "b, seq = 0, 1\n        self.meta[seq]",
        "weight board: every version written into the same buffer",
        "tests/runners/test_weights.py"),
    mut("F3", "rtrl_rl/run_dir.py", "fcntl.LOCK_EX | fcntl.LOCK_NB",
        "fcntl.LOCK_SH | fcntl.LOCK_NB",
        "run_dir lock taken shared: two runs may own one directory", GUARDS),
    mut("F4", "rtrl_rl/resume.py", "             if _must_match(k) and not (k == ",
        "             if False and not (k == ", "resume accepts changed shape/state keys", GUARDS),
    mut("F5", LEARNER_BASE, "            group.update(hyper)\n", "",
        "resume keeps the checkpoint's optimizer hyperparameters over the config's", GUARDS),
    mut("F6", "rtrl_rl/runners/loop.py", "            if final:\n                raise",
        "            if True:\n                raise",
        "a failed periodic checkpoint ends the run", FAULTS),
    mut("F15", "rtrl_rl/runners/loop.py",
        "        except BaseException:\n            self.runner.close()\n",
        "        except BaseException:\n",
        "a run that fails after building its runner leaves its envs and workers running",
        f"{GUARDS}::test_a_run_that_fails_after_building_its_runner_closes_it"),
    mut("F8", ASYNC, "            self._restart_silent()\n", "",
        "async runner: a stuck (alive, silent) worker is waited for forever",
        "tests/runners/test_async.py::test_a_stuck_worker_is_killed_and_restarted",
        timeout_caught=True),
    # Policy inference on the learner's device (the inference process and env-only workers)
    mut("I1", INFER, "for r, t, sl in views if t <= 1]", "for r, t, sl in views if t == 0]",
        "inference: a rollout's core_state is not the state before its entry 0",
        "tests/runners/test_inference_server.py"),
    mut("I2", INFER, "                self.state[sl] = self.initial[sl]\n", "",
        "inference: a restarted worker's streams keep the dead worker's core state",
        SIGKILL_WORKER + "[learner]"),
    mut("I3", "rtrl_rl/runners/env_worker.py",
        'CARRIED = ("obs", "reward", "first", "prev_action", "action", "dist_params")',
        'CARRIED = ("obs", "reward", "first", "prev_action", "dist_params")',
        "env worker: entry T's action is not carried over to entry 0 of the next rollout",
        "tests/runners/test_inference_server.py"),
    mut("I4", INFER, "        if self.board.latest != self.version:", "        if False:",
        "inference: acts with the first weights for ever (never reads a newer version)",
        SIGKILL_WORKER + "[learner]"),
    mut("I5", ASYNC, "            why = self.placement.death()\n", "            return\n",
        "async runner: a dead inference process is never restarted",
        "tests/runners/test_inference_server.py::test_sigkilled_inference_process_restarts_every"
        "_stream", timeout_caught=True),
    mut("I6", INFER, "dev = {name: getattr(r, name)[t] for name in self._staging}",
        "dev = {name: getattr(r, name)[max(t - 1, 0)] for name in self._staging}",
        "inference: one group served alone on the CPU acts on its previous observation",
        "tests/runners/test_inference_server.py"),
    mut("F11", ASYNC, "self.failed_starts[w] += int(own_failure)",
        "self.failed_starts[w] += 1",
        "async runner: each inference death counts as every worker's own failure",
        "tests/runners/test_inference_server.py::test_inference_deaths_do_not_count_as_the_workers"
        "_own"),
    mut("F12", "rtrl_rl/runners/procs.py",
        "    pin_process(cpus)  # before torch or numba start thread pools, which inherit it\n",
        "", "cpu affinity: worker and inference processes are never pinned",
        "tests/runners/test_affinity.py"),
    mut("F13", ASYNC, "            affinity.pin_process(cpus)\n", "",
        "cpu affinity: the learner stays pinned after the run closes",
        "tests/runners/test_affinity.py"),
    mut("F14", "rtrl_rl/runners/affinity.py",
        "n = max(1, min(learner_threads, len(cpus) // 2))",
        "n = max(1, min(learner_threads, len(cpus) - 1))",
        "cpu affinity: a learner with many threads leaves the actors a single CPU",
        "tests/runners/test_affinity.py"),
    mut("F9", ASYNC, "waited = any(not self.pending[u] for u in self._units(w))",
        "waited = not any(self.pending[u] for u in self._units(w))",
        "async runner: a silent worker with one of two groups delivered is waited for forever",
        "tests/runners/test_async.py::test_a_silent_worker_with_one_group_delivered_is_still"
        "_restarted"),
    # Pair cells (RTU, LRU) and the engine's 2x2-block path
    mut("P1", FACTORS, "p[s - 1] = _matmul2(p[s], g[s])", "p[s - 1] = _matmul2(g[s], p[s])",
        "RTRL pair blocks, PyTorch form: suffix products multiplied in the wrong order",
        "tests/grad/test_factors.py"),
    mut("P2", "rtrl_rl/grad/rtrl.py", "s1, p[..., 0, 1])", "s1, p[..., 1, 0])",
        "RTRL pair blocks: carried sensitivities scaled by the transposed block", CELL_EXACT),
    mut("P3", PAIR, "return {\"nu_log\": nu * r * r / norm}", "return {\"nu_log\": nu * r / norm}",
        "RTU: wrong derivative of the normalisation in the nu_log term",
        "tests/models/test_pair_cells.py::test_declared_terms_are_the_autograd_derivatives"),
    mut("P4", PAIR, "a = d.unsqueeze(-1) * a", "a = d.unsqueeze(-2) * a",
        "non-linear RTU: relu derivative applied to the Jacobian's columns, not its rows",
        CELL_EXACT),
    mut("P5", "rtrl_rl/grad/rtrl.py", "acc, g_vec = acc.sum(-1), g_vec.sum(-1)",
        "acc, g_vec = acc[..., 0], g_vec[..., 0]",
        "RTRL pair blocks: the injection's gradient ignores each unit's second real",
        CELL_EXACT),
    mut("P8", PAIR, "            return F.gelu(F.linear(c.reshape(t_len, b, -1), self.W_y, "
        "self.b_y))", "            return F.gelu(c.reshape(t_len, b, -1))",
        "RTU with the GELU readout: the readout layer's weights skipped",
        "tests/models/test_pair_cells.py"),
    mut("P6", "rtrl_rl/envs/delayed_recall.py",
        "during = (self._t >= 1) & (self._t <= self._delay)", "during = self._t <= self._delay",
        "delayed recall: a distractor replaces the cue", "tests/envs/test_delayed_recall.py"),
    mut("P7", "rtrl_rl/grad/sensitivity_pass.py", "s[b, i, m, n] *= p0[b, n]\n",
        "s[b, i, m, n] *= p0[b, n] * p0[b, n]\n",
        "RTRL CPU kernel: the carried sensitivities scaled by P_0 squared",
        "tests/grad/test_exactness.py"),
    mut("P9", "rtrl_rl/grad/sensitivity_pass.py", "+ x6 * pu[b, t + 6, k] + x7 * pu[b, t + 7, k])",
        "+ x6 * pu[b, t + 6, k] + x7 * pu[b, t + 6, k])",
        "RTRL CPU kernel: in the update unrolled by 8 steps, the 8th reads the 7th's factors",
        "tests/grad/test_sensitivity_pass.py"),
    mut("P14", PAIR, "return torch.view_as_real(c * torch.complex(dg, dphi))",
        "return torch.view_as_real(c * torch.complex(dg, -dphi))",
        "pair cells: the rotation's parameter terms rotate the state the wrong way",
        CELL_EXACT),
    mut("P15", FACTORS, "g = a_f[s if a_t else 0, bi if a_b else 0]",
        "g = a_f[s if a_t else 0, 0]",
        "pair factor sweep: every stream reads stream 0's Jacobian blocks",
        "tests/grad/test_factors.py"),
    mut("P13", "rtrl_rl/grad/sensitivity_pass.py",
        "flat[b, i, k] += x0 * pu[b, t, k] + x1 * pu[b, t + 1, k]",
        "flat[b, i, k] += x0 * pu[b, t, k] + x1 * pu[b, t, k]",
        "RTRL CPU kernel: in the update's group of 2 leftover steps, the 2nd reads the 1st's "
        "factors", "tests/grad/test_sensitivity_pass.py"),
    mut("P11", "rtrl_rl/grad/sensitivity_pass.py",
        "row[2 * n] = pa[2 * n] * x0 + pc[2 * n] * x1",
        "row[2 * n] = pa[2 * n] * x0 + pc[2 * n + 1] * x1",
        "RTRL CPU kernel, 2x2 blocks: P_0's off-diagonal entries swapped in the decay",
        CELL_EXACT),
    mut("P12", "rtrl_rl/grad/factors.py",
        "                qc[2 * n] = q00 * g01 + q01 * g11\n",
        "                qc[2 * n] = q00 * g01 + q01 * g10\n",
        "RTRL factor kernel, 2x2 blocks: the running product takes the wrong entry",
        "tests/grad/test_factors.py"),
    mut("P10", "rtrl_rl/grad/backends.py",
        "            acc = sensitivity_pass.grad_and_update(s_mat, g, update.p0)\n"
        "            update.rank_t(0, s_mat.shape[0])\n",
        "            acc = sensitivity_pass.grad_and_update(s_mat, g, update.p0)\n"
        "            update.mark_updated(0, s_mat.shape[0])\n",
        "RTRL CPU kernel, long chunks: the rank-T matmul after the scaling pass skipped",
        "tests/grad/test_exactness.py"),
    mut("F10", "rtrl_rl/resume.py",
        "    old = {**{k: v for k, v in ADDED.items() if k in new}, **old}\n", "",
        "resume refuses every checkpoint written before a config key was added",
        "tests/runners/test_run_guards.py::test_checkpoints_from_before_an_added_key_resume"
        "_as_its_old_behaviour"),
    # Action distributions and gymnasium spaces
    mut("D1", DIST, "return torch.stack(parts, -1).sum(-1)",
        "return torch.stack(parts, -1).mean(-1)",
        "factored categorical: joint log-prob averaged over components, not summed",
        "tests/models/test_policy_dist.py"),
    mut("D2", DIST, "(-0.5 * z * z - log_std - 0.5", "(-0.5 * z * z - 0.5",
        "diagonal Gaussian: log-prob misses the -log std term", "tests/models/test_policy_dist.py"),
    mut("D3", SPACES, "acts = np.clip(a.detach().to(\"cpu\", torch.float64).numpy(), low, high)",
        "acts = a.detach().to(\"cpu\", torch.float64).numpy()",
        "Box actions reach the env unclipped", "tests/envs/test_gym_spaces.py"),
    mut("D4", SPACES, "return (0, 3, 1, 2), (shape[2], shape[0], shape[1])",
        "return (0, 3, 2, 1), (shape[2], shape[0], shape[1])",
        "channels-last image part transposed to [C, W, H]", "tests/envs/test_gym_spaces.py"),
    mut("D5", SPACES, "- start + offsets", "+ offsets",
        "MultiDiscrete observations: the space's start not subtracted before the one-hot",
        "tests/envs/test_gym_spaces.py"),
    mut("D6", "rtrl_rl/envs/wrappers.py", "    for i, spec in enumerate(specs):\n        try:",
        "    for i, spec in enumerate(reversed(specs)):\n        try:",
        "env.wrappers applied in reverse order", "tests/envs/test_wrappers.py"),
    mut("D8", DIST, "mean = torch.where(self.bounded, squashed, head_out)", "mean = head_out",
        "diagonal Gaussian: the mean is free to leave finite bounds",
        "tests/models/test_policy_dist.py"),
    mut("D9", DIST, "return (logits - noise.clamp_min_", "return (logits + noise.clamp_min_",
        "categorical: Gumbel noise with the wrong sign (samples favour unlikely actions)",
        "tests/models/test_policy_dist.py"),
    mut("D7", LEARNER, "impala_loss(log_pi_a, agent.dist.entropy(params)",
        "impala_loss(log_pi_a, agent.dist.entropy(params.detach())",
        "learner: the entropy bonus sends no gradient to the policy", LEARNER_TESTS),
    # PPO loss terms
    mut("O1", "rtrl_rl/algos/ppo_losses.py", "acc = deltas[t] + discounts[t] * lambda_ * acc",
        "acc = deltas[t] + lambda_ * acc", "GAE: advantages flow back across episode ends",
        "tests/algos/test_ppo_losses.py"),
    mut("O2", "rtrl_rl/algos/ppo_losses.py", "surrogate = torch.minimum(",
        "surrogate = torch.maximum(", "PPO: the surrogate takes the optimistic side of the clip",
        "tests/algos/test_ppo_losses.py"),
    mut("O3", "rtrl_rl/algos/ppo.py", f"mb.stream_ids,\n{' ' * 35}advance=False)",
        f"mb.stream_ids,\n{' ' * 35}advance=True)",
        "PPO: every epoch's minibatch advances the carried sensitivities", PPO_TESTS),
    mut("O4", "rtrl_rl/algos/ppo.py", "            p.copy_(a)", "            pass",
        "PPO: the sensitivities advance from the last epoch's parameters", PPO_TESTS),
    mut("O5", "rtrl_rl/algos/ppo.py", "- old_log_pi[:, idx]", "- old_log_pi[:, :idx.numel()]",
        "PPO: a minibatch's ratios use other streams' old log-probs", PPO_TESTS),
    mut("G13", "rtrl_rl/grad/rtrl_reference.py", "enumerate(s if advance else [])",
        "enumerate(s)", "reference RTRL: advance=False still moves the sensitivities",
        "tests/grad/test_advance.py"),
    mut("F7", "rtrl_rl/resume.py", "            problems.append(str(e))\n", "            raise\n",
        "resume=true gives up at an unreadable newest checkpoint", FAULTS),
    # torchrun ranks
    mut("R11", "rtrl_rl/runners/distributed.py", '        if reduction == "mean":',
        '        if reduction == "sum":', "ranks: the gradient reduction is the wrong way round",
        DIST_EQUAL),
    mut("R12", "rtrl_rl/runners/distributed.py", "        if self.rank == 0:\n",
        "        if True:\n", "ranks: every rank steps the same streams", DIST_SEEDS,
        DIST_RESUME),
    mut("R13", "rtrl_rl/runners/loop_state.py", "    if rank == 0:\n        c = ckpt",
        "    if rank == 1:\n        c = ckpt", "ranks: resume swaps ranks 0 and 1's streams",
        DIST_RESUME),
    mut("R4", "rtrl_rl/runners/loop.py",
        "rollout.batch * self.frames_per_step * self.ranks.world_size\n",
        "rollout.batch * self.frames_per_step\n",
        "ranks: the frame count is one rank's", DIST_RESUME,
        "tests/runners/test_launch.py::test_rtrl_train_starts_its_own_ranks"),
    mut("R5", "rtrl_rl/algos/learner.py", "            self.combine_grads(self.params)",
        "            pass", "ranks: each rank steps on its own gradient", DIST_EQUAL),
    mut("R15", "rtrl_rl/runners/distributed.py",
        "            import torch.distributed.nn as _  # noqa: F401\n", "",
        "ranks: the process group outlives close (gloo's threads die with the interpreter)",
        "tests/runners/test_distributed.py::test_closing_the_collective_stops_gloos_threads"),
    mut("L1", "rtrl_rl/malloc.py", "TRIM_THRESHOLD = 256 * 2**20",
        "TRIM_THRESHOLD = 256 * 2**10",
        "malloc: the trim threshold in KB, not MB (the heap top is trimmed again)",
        "tests/test_malloc.py"),
    # benchmark suites (rtrl-bench)
    mut("B1", "rtrl_rl/bench/launcher.py",
        '    return state.get("status") == "done" and int(state.get("frames", -1)) >= run.frames',
        '    return state.get("status") == "done"',
        "rtrl-bench: a run done at a smaller budget counts as done at a larger one",
        "tests/bench/test_launcher.py::test_a_larger_budget_resumes_finished_runs"),
    mut("B2", "rtrl_rl/bench/launcher.py",
        "            if is_done(run):\n                result.skipped.append(run.key)",
        "            if False:\n                result.skipped.append(run.key)",
        "rtrl-bench: a re-run starts every run again, finished or not",
        "tests/bench/test_launcher.py::test_rerun_of_a_finished_suite_runs_nothing"),
    mut("B3", "rtrl_rl/bench/launcher.py", "preexec_fn=_die_with_parent,", "preexec_fn=None,",
        "rtrl-bench: a killed suite leaves its training processes running",
        "tests/bench/test_launcher.py::test_sigkilled_suite_resumes_only_the_missing_runs"),
    mut("B4", "rtrl_rl/bench/suite.py", '"resume=true", f"hydra.run.dir={run_dir}",',
        '"resume=false", f"hydra.run.dir={run_dir}",',
        "rtrl-bench: an interrupted run starts from scratch instead of its checkpoint",
        "tests/bench/test_launcher.py::test_sigkilled_suite_resumes_only_the_missing_runs"),
    mut("B5", "rtrl_rl/bench/report.py",
        "threshold = thresholds[task] = floor + THRESHOLD_FRAC * (best - floor)",
        "threshold = thresholds[task] = THRESHOLD_FRAC * best",
        "rtrl-bench report: the threshold ignores the random policy's score",
        "tests/bench/test_report.py"),
    mut("B6", "rtrl_rl/bench/report.py",
        "    return better if low > 0 else worse if high < 0 else \"tie\"",
        "    return better if low > 0 else worse",
        "rtrl-bench report: an interval that holds zero still names a winner",
        "tests/bench/test_report.py"),
    mut("B7", "rtrl_rl/models/agent.py",
        "        self.first_in_stem = first_input and resolve_stem(cfg.stem, spec) == \"mlp\"",
        "        self.first_in_stem = False",
        "model.first_input: the flag skips the MLP stem (a linear core cannot use it)",
        "tests/models/test_agent.py"),
    mut("B8", "rtrl_rl/envs/config.py", "        if self.wrappers:  # one wrapped env now",
        "        if False:  # one wrapped env now",
        "a wrapper that fails to build is found only once the run starts",
        "tests/envs/test_wrappers.py"),
    mut("B9", "rtrl_rl/bench/report.py",
        '            if (b.task, b.grad, b.twin) != (r.task, "bptt", r.twin):',
        '            if (b.task, b.grad) != (r.task, "bptt"):',
        "rtrl-bench report: RTRL is compared with BPTT methods that differ in more than grad",
        "tests/bench/test_report.py"),
    mut("B10", "rtrl_rl/bench/launcher.py",
        "code in (128 + RUN_STOP, -RUN_STOP)",
        "code in (128 + self._stop, -self._stop)",
        "rtrl-bench: runs stopped by Ctrl-C (sent SIGTERM) are reported failed",
        "tests/bench/test_launcher.py::test_a_signal_stops_the_runs_with_a_checkpoint"),
    # Per-component configs: blocks per core, options of other variants, saved configs
    mut("C1", "rtrl_rl/config.py",
        "                model.setdefault(core, {}).setdefault(new, value)",
        "                pass",
        "an old checkpoint's core options (model.forget_bias) are dropped, not moved to its block",
        "tests/test_config.py"),
    mut("C2", "rtrl_rl/resume.py",
        '    idle = tuple(f"model.{b}." for b in CORE_BLOCKS if b != new.get("model.core"))',
        '    idle = ("<none>",)',
        "resume compares the option blocks of cores the run does not use",
        "tests/test_config.py"),
    mut("C3", "rtrl_rl/models/registry.py",
        "    return cls(input_size, hidden_size, layers, **asdict(opts))",
        "    return cls(input_size, hidden_size, layers)",
        "make_core checks a core's options and then builds the core without them",
        "tests/models/test_cells.py", "tests/models/test_pair_cells.py"),
    mut("C4", "rtrl_rl/config.py", "            if why:\n                raise ConfigError(why)",
        "            if why and group == \"model\":\n                raise ConfigError(why)",
        "an option of another learner or runner is accepted (and ignored) by this one",
        "tests/test_config.py"),
    mut("C5", "rtrl_rl/runners/loop.py", "        if self.cfg.eval_episodes and path is not None:",
        "        if False:",
        "eval_episodes is accepted and does nothing",
        "tests/runners/test_train_smoke.py::test_eval_episodes_and_agent_steps"),
    mut("C6", "rtrl_rl/models/stems.py", '    return "impala" if image else "mlp"',
        '    return "mlp"', "model.stem=auto gives image observations the MLP stem",
        "tests/models/test_stems.py::test_auto_stem_follows_the_observations",
        "tests/runners/test_train_smoke.py::test_the_default_model_takes_images_with_stem_auto"),
    mut("C7", "rtrl_rl/runners/procs.py", "    os.write(conn.fileno(), frame)",
        "    conn.send_bytes(frame)",
        "step pipes go back to Connection's two-read framing (a killed reader desyncs them)",
        "tests/runners/test_async.py::test_a_reader_killed_between_frames_leaves_the_pipe_in_step"),
    # Non-finite data: the env check, skipped updates, finite checkpoints
    mut("N1", "rtrl_rl/envs/guard.py",
        "        return _finite(reward) and (not self._float_obs or _finite(obs))",
        "        return True", "env check: non-finite rewards and observations pass, per step "
        "and per rollout", "tests/envs/test_guard.py"),
    mut("N2", "rtrl_rl/envs/guard.py",
        "        if tuple(obs.shape) != self._obs_shape or obs.dtype != self.spec.obs_dtype:",
        "        if False:", "env check: an observation of the wrong shape or dtype passes",
        "tests/envs/test_guard.py"),
    mut("N3", "rtrl_rl/envs/guard.py", "            ts = self._drop_nonfinite_returns(ts)",
        "            ts = ts", "env check: a non-finite episode return is reported",
        "tests/envs/test_guard.py"),
    mut("N4", "rtrl_rl/runners/async_runner.py", '                if msg[0] == "fatal":',
        '                if msg[0] == "fatal" and False:',
        "async runner: a worker's bad env data is not raised in the learner",
        "tests/runners/test_nonfinite_train.py::"
        "test_bad_env_data_stops_the_run_after_saving_its_last_good_state"),
    mut("N5", "rtrl_rl/algos/learner.py",
        "        if not math.isfinite(float(grad_norm) + float(loss.detach())):",
        "        if False:", "learner: a non-finite gradient is applied",
        "tests/algos/test_guard.py"),
    mut("N6", "rtrl_rl/algos/learner.py",
        "        if not math.isfinite(float(grad_norm) + float(loss.detach())):",
        "        if not math.isfinite(float(grad_norm)):",
        "learner: a non-finite loss with finite gradients is applied",
        "tests/algos/test_guard.py"),
    mut("N12", "rtrl_rl/algos/guard.py", "            p.grad.fill_(math.nan)", "            pass",
        "torchrun: a rank whose loss is not finite sends a finite gradient (ranks disagree)",
        "tests/algos/test_guard.py"),
    mut("N7", "rtrl_rl/algos/learner.py", "        if stepped:\n            self.scheduler.step()",
        "        if True:\n            self.scheduler.step()",
        "learner: a skipped update still advances the LR schedule and the count",
        "tests/algos/test_guard.py"),
    mut("N8", "rtrl_rl/algos/ppo.py", "            self.restore(snap)", "            pass",
        "PPO: a skipped minibatch keeps the steps taken before it",
        "tests/algos/test_guard.py"),
    mut("N9", "rtrl_rl/algos/guard.py", "        if self.in_row >= self.limit:",
        "        if False:", "learner: skipped updates never stop the run",
        "tests/algos/test_guard.py"),
    mut("N10", "rtrl_rl/grad/rtrl.py",
        "            bad |= ~torch.isfinite(s.flatten(1)).all(1).cpu()", "            pass",
        "RTRL: non-finite sensitivities are never reset", "tests/algos/test_guard.py"),
    mut("N11", "rtrl_rl/checkpoint.py", "    if bad is not None:\n        raise CheckpointError",
        "    if False:\n        raise CheckpointError",
        "checkpoints: a non-finite state is written", "tests/test_checkpoint.py"),
    mut("N13", "rtrl_rl/runners/actor.py",
        '            self._check(self.buf["reward"], self.buf["obs"])', "            pass",
        "actor: the deferred env check is never run (bad data reaches the learner)",
        "tests/runners/test_nonfinite_train.py::"
        "test_bad_env_data_stops_the_run_after_saving_its_last_good_state"),
    mut("N14", "rtrl_rl/runners/env_worker.py", "                    group.check()\n",
        "", "env-only worker: the deferred env check is never run",
        "tests/runners/test_nonfinite_train.py::"
        "test_bad_env_data_stops_the_run_after_saving_its_last_good_state"),
    # Registries: one source of names and capabilities
    mut("Y1", "rtrl_rl/grad/rtrl.py", "        return core.elementwise", "        return True",
        "grad=rtrl accepts a core that is not element-wise (the LSTM)",
        "tests/test_registries.py"),
    # Atari and ProcGen adapters against the reference pipelines
    mut("E1", ATARI, "obs=torch.from_numpy(np.array(obs, dtype=np.uint8)),",
        "obs=torch.from_numpy(np.array(obs[:, ::-1], dtype=np.uint8)),",
        "Atari: the frame stack newest-first", ATARI_REF, requires="cv2"),
    mut("E2", ATARI, "maxpool=True,", "maxpool=False,",
        "Atari: no max-pool over the last two frames of an action repeat", ATARI_REF,
        requires="cv2"),
    mut("E3", ATARI, "use_fire_reset=cfg.fire_reset,", "use_fire_reset=True,",
        "Atari: FIRE pressed at every reset, whatever fire_reset says", ATARI_REF,
        requires="cv2"),
    mut("E4", ATARI, "life_lost = terminated & ~truncated & (lives < self._lives)",
        "life_lost = terminated & ~truncated",
        "Atari episodic_life: a game over is taken for a life loss (done never set)",
        ATARI_REF, requires="cv2"),
    mut("E5", ATARI, "noop_max=cfg.noop_max,", "noop_max=0,",
        "Atari: no-op starts never happen", ATARI_REF, requires="cv2"),
    mut("E6", ATARI, "max_num_frames_per_episode=cfg.max_episode_frames,",
        "max_num_frames_per_episode=cfg.max_episode_frames // cfg.frameskip,",
        "Atari: max_episode_frames taken as agent steps' worth of frames", ATARI_REF,
        requires="cv2"),
    mut("E7", PROCGEN, 'obs["rgb"].transpose(0, 3, 1, 2)', 'obs["rgb"].transpose(0, 3, 2, 1)',
        "ProcGen: frames transposed to [C, W, H]", PROCGEN_REF),
    mut("E8", PROCGEN, 'obs["rgb"].transpose(0, 3, 1, 2)',
        'obs["rgb"][..., ::-1].transpose(0, 3, 1, 2)', "ProcGen: BGR channel order",
        PROCGEN_REF),
    mut("E9", PROCGEN, '            if self.split == "train":', "            if True:",
        "ProcGen: the eval split plays the training levels", PROCGEN_REF),
    mut("E10", PROCGEN, "rand_seed = self._seeds.next(seed)",
        "rand_seed = self._built_seed", "ProcGen: reset() replays the levels of the last build",
        PROCGEN_REF),
    # Triton kernels (caught where triton is installed: in the interpreter, or on CUDA)
    mut("K1", "rtrl_rl/grad/factors_triton.py", "pz, pf = p * zeta, p * phi",
        "pz, pf = p * zeta, p * zeta", "Triton eLSTM sweep: the W_f terms use zeta",
        TRITON, requires="triton"),
    mut("K2", "rtrl_rl/grad/factors_triton.py", "q00 * g01 + q01 * g11,",
        "q00 * g01 + q01 * g10,", "Triton pair sweep: a wrong entry of P_s g_s", TRITON,
        requires="triton"),
    mut("K3", "rtrl_rl/grad/sensitivity_triton.py", "p10 * x0 + p11 * x1",
        "p10 * x0 + p01 * x1", "Triton pass: a wrong entry of the 2x2 decay", TRITON,
        requires="triton"),
    mut("K4", "rtrl_rl/grad/backends.py", "acc = kernels.grad_and_scale(s_mat, g, update.p0)",
        "acc = kernels.grad_and_scale(s_mat, g, None)",
        "RTRL on CUDA: the carried sensitivities are not decayed by P_0", TRITON,
        requires="triton"),
]


class Stale(Exception):
    """A mutation's ``old`` text no longer occurs as expected."""


def mutated_texts(root: Path, m: Mutation) -> dict[str, str]:
    """The mutated contents of m's files under ``root``; ``Stale`` if an edit does not fit."""
    texts: dict[str, str] = {}
    problems = []
    for e in m.edits:
        if e.file not in texts:
            path = root / e.file
            texts[e.file] = path.read_text() if path.is_file() else ""
        found = texts[e.file].count(e.old)
        if found != e.count:
            problems.append(f"{m.id}: {e.file}: {e.old.strip()!r} occurs {found} times, "
                            f"expected {e.count}")
        texts[e.file] = texts[e.file].replace(e.old, e.new)
    if problems:
        raise Stale("\n".join(problems))
    return texts


def copy_tree(src: Path) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="mutcheck-"))
    for name in COPIED:  # no .pyc (a same-size edit could reuse one); numba's cache is kept
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, ignore=shutil.ignore_patterns("*.pyc"))
        elif (src / name).exists():
            shutil.copy2(src / name, dst / name)
    return dst


def env_for(copy: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(copy), env.get("PYTHONPATH")) if p)
    return env


def check_imports_copy(copy: Path) -> None:
    """From elsewhere (as a spawned worker would), ``rtrl_rl`` and ``tests`` are the copy's."""
    code = ("import sys; sys.path.pop(0); import rtrl_rl, tests; "
            "print(rtrl_rl.__file__, tests.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=copy.parent, env=env_for(copy),
                         capture_output=True, text=True, timeout=120)
    files = out.stdout.split()
    if out.returncode or len(files) != 2 or not all(
            Path(f).resolve().is_relative_to(copy.resolve()) for f in files):
        raise RuntimeError(f"{copy} is not what gets imported: {out.stdout}{out.stderr}")


def run_pytest(copy: Path, tests: list[str], timeout: float, stop_first: bool = True) -> dict:
    cmd = [*PYTEST, *(["-x"] if stop_first else []), *tests]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=copy, env=env_for(copy), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = {0: "survived", 1: "caught"}.get(proc.returncode, "error")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # pytest and whatever it spawned
        out, _ = proc.communicate()
        status = "timeout"
    failed = [ln.split(" ", 1)[1].split(" - ", 1)[0].strip() for ln in out.splitlines()
              if ln.startswith(("FAILED ", "ERROR "))]
    return {"status": status, "returncode": proc.returncode, "failed": failed,
            "seconds": round(time.monotonic() - t0, 1), "tail": out[-2000:]}


def within(a: str, b: str) -> bool:
    """Node id ``b`` is ``a`` or lies inside it (a file, a test, a parametrization)."""
    return b == a or b.startswith((a + "::", a + "["))


def run_mutation(snapshot: Path, m: Mutation, timeout: float) -> dict:
    copy = copy_tree(snapshot)
    try:
        check_imports_copy(copy)
        for file, text in mutated_texts(copy, m).items():
            (copy / file).write_text(text)
        result = run_pytest(copy, list(m.tests), timeout)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    print(f"  {m.id}: {result['status']} ({result['seconds']} s)", file=sys.stderr, flush=True)
    return result


def show(rows: list[list[str]], title: str) -> None:
    header = ["id", "file", "description", "targeted tests", "result", "s"]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for r in [header, *rows]:
            print(" | ".join(r))
        return
    table = Table(title=title, show_lines=True)
    for name in header:
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(*r)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated mutation ids")
    ap.add_argument("--list", action="store_true", help="list (and check) the mutations, exit")
    ap.add_argument("--jobs", type=int, default=1, help="mutations run at once (default 1)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args(argv)
    by_id = {m.id: m for m in MUTATIONS}
    ids = args.only.split(",") if args.only else list(by_id)
    if unknown := [i for i in ids if i not in by_id]:
        ap.error(f"unknown mutation ids {unknown}; known: {', '.join(by_id)}")
    selected = [by_id[i] for i in ids]
    missing = [m.id for m in selected if m.requires and not args.list
               and importlib.util.find_spec(m.requires) is None]
    if missing:
        print(f"not run (their tests skip without a module): {', '.join(missing)}",
              file=sys.stderr)
        selected = [m for m in selected if m.id not in missing]

    def row(m: Mutation, result: str, seconds: str = "") -> list[str]:
        files = ", ".join(dict.fromkeys(e.file.removeprefix("rtrl_rl/") for e in m.edits))
        tests = "\n".join(t.removeprefix("tests/") for t in m.tests)
        return [m.id, files, m.description, tests, result, seconds]

    snapshot = ROOT if args.list else copy_tree(ROOT)
    try:
        stale = {}
        for m in selected:
            try:
                mutated_texts(snapshot, m)
            except Stale as e:
                stale[m.id] = str(e)
        if args.list:
            show([row(m, "STALE" if m.id in stale else "ok") for m in selected], "mutations")
        for text in stale.values():
            print(f"stale mutation: {text}", file=sys.stderr)
        if args.list or stale:
            return 2 if stale else 0

        targets = list(dict.fromkeys(t for m in selected for t in m.tests))
        print(f"baseline: {len(targets)} targets on the unmutated tree ...", file=sys.stderr)
        check_imports_copy(snapshot)
        base = run_pytest(snapshot, targets, args.timeout * len(targets), stop_first=False)
        if base["status"] not in ("survived", "caught") or (
                base["status"] == "caught" and not base["failed"]):
            print(f"baseline could not run ({base['status']}):\n{base['tail']}", file=sys.stderr)
            return 2
        broken = {m.id: [f for f in base["failed"] if any(
            within(t, f) or within(f, t) for t in m.tests)] for m in selected}
        print(f"baseline: {'FAILED ' + ', '.join(base['failed']) if base['failed'] else 'passed'}"
              f" ({base['seconds']} s)", file=sys.stderr)
        runnable = [m for m in selected if not broken[m.id]]
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            done = dict(zip([m.id for m in runnable], pool.map(
                lambda m: run_mutation(snapshot, m, args.timeout), runnable), strict=True))
    finally:
        if snapshot is not ROOT:
            shutil.rmtree(snapshot, ignore_errors=True)

    records = []
    for m in selected:
        r = done.get(m.id) or {"status": "baseline", "failed": broken[m.id], "seconds": 0.0}
        counted = r["status"] == "caught" or (r["status"] == "timeout" and m.timeout_caught)
        records.append({"id": m.id, "description": m.description, "tests": list(m.tests),
                        "files": [e.file for e in m.edits], "caught": counted, **r})
    show([row(m, r["status"], f"{r['seconds']:.0f}") for m, r in zip(selected, records,
                                                                      strict=True)],
         "mutation check")
    caught = sum(r["caught"] for r in records)
    print(f"caught {caught} / {len(records)}")
    for status in ("survived", "timeout", "error", "baseline"):
        if hit := [r["id"] for r in records if r["status"] == status]:
            print(f"{status}: {', '.join(hit)}")
    if args.json:
        args.json.write_text(json.dumps({"baseline": base, "mutations": records}, indent=1))
    if any(r["status"] == "baseline" for r in records):
        return 2
    return 0 if caught == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
