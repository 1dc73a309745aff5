"""Typed run configuration: one dataclass per Hydra group, validated before anything starts.

Hydra composes ``configs/`` into a plain tree; ``validate(cfg)`` merges each group into its
dataclass (unknown keys and wrong types fail), runs the range checks in ``__post_init__``,
checks the env options with the env family's own schema, and turns every failure into a
one-line ``ConfigError`` naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rtrl_rl.algos import LEARNERS
from rtrl_rl.errors import ConfigError, unknown_name
from rtrl_rl.grad import GRADS
from rtrl_rl.models.registry import CORES
from rtrl_rl.run_logger import LoggerConfig
from rtrl_rl.runners import RUNNERS


def _scan_frames(delay: int, episodes: int = 125_000, floor: int = 4_000_000) -> int:
    """Frame budget of the memory-length scan: the same number of delayed-recall episodes
    for every delay, but never fewer frames than the 4M that D=30 needs at T=10 (with
    episodes alone, D=10 got 1.5M frames, too few updates to learn even without a delay
    problem)."""
    return max(int(episodes) * (int(delay) + 2), int(floor))


def _scan_forget_bias(delay: int) -> float:
    """The default job's tuned 3.0 up to a delay of 30; beyond, ``ln(delay)``, whose gate
    keeps about e^-1 of the cell over ``delay`` steps at initialization."""
    delay = int(delay)
    return 3.0 if delay <= 30 else round(math.log(delay), 2)


for _name, _fn in (("scan_frames", _scan_frames), ("scan_forget_bias", _scan_forget_bias)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        err = unknown_name(key, value, choices)
        raise ConfigError(f"{key}: {err}")


@dataclass
class ModelConfig:
    """Agent: stem -> FC -> [features, clipped prev reward, prev action] -> core -> heads."""

    stem: str = "mlp"  # impala | nature | mlp
    stem_hidden: list[int] = field(default_factory=lambda: [64])  # mlp layer sizes
    stem_out: int = 256  # FC width after a conv stem
    core: str = "elstm"  # elstm | rtu | lru | lstm | none
    hidden_size: int = 64  # units (rtu, lru: complex units, 2 reals each)
    layers: int = 1
    forget_bias: float = 1.0  # elstm, lstm
    rtu_recurrence: str = "linear"  # rtu: linear (relu output) | nonlinear (relu inside)
    rtu_readout: str = "relu"  # rtu: relu (that output to the heads) | gelu (the state c
    #   through the LRU's readout layer, gelu(W_y c + b_y))
    r_min: float = 0.9  # rtu, lru: initial eigenvalue moduli, |lambda|^2 uniform on
    r_max: float = 0.999  #   [r_min^2, r_max^2] (the LRU's long-memory ring)
    max_phase: float = 6.283185307179586  # rtu, lru: initial phases uniform on (0, max_phase]
    prev_reward: bool = True
    prev_action: bool = False
    # an input column that is 1 at an episode's first step: what POPGym's Antialias wrapper
    # adds, without which a cell whose state starts at zero cannot tell the first step apart
    first_input: bool = False
    amp: str = "none"  # none | bf16: autocast the stem and heads (the core stays float32)
    compile_stem: bool = False  # torch.compile the stem (in each process that runs it)

    def __post_init__(self) -> None:
        _choice(self.stem, "model.stem", ("impala", "nature", "mlp"))
        _choice(self.amp, "model.amp", ("none", "bf16"))
        _choice(self.core, "model.core", tuple(CORES))
        _choice(self.rtu_recurrence, "model.rtu_recurrence", ("linear", "nonlinear"))
        _choice(self.rtu_readout, "model.rtu_readout", ("relu", "gelu"))
        _check(0.0 <= self.r_min < self.r_max <= 1.0, "model.r_min",
               f"need 0 <= r_min < r_max <= 1, got {self.r_min}, {self.r_max}")
        _check(self.max_phase > 0, "model.max_phase", f"must be > 0, got {self.max_phase}")
        _check(self.hidden_size >= 1, "model.hidden_size", f"must be >= 1, got {self.hidden_size}")
        _check(self.layers >= 1, "model.layers", f"must be >= 1, got {self.layers}")
        _check(self.stem_out >= 1, "model.stem_out", f"must be >= 1, got {self.stem_out}")
        _check(all(h >= 1 for h in self.stem_hidden), "model.stem_hidden", "sizes must be >= 1")


@dataclass
class GradConfig:
    """The one switch for recurrent credit: rtrl | bptt | one_step."""

    name: str = "rtrl"

    def __post_init__(self) -> None:
        _choice(self.name, "grad.name", tuple(GRADS))


@dataclass
class AlgoConfig:
    """The learner: IMPALA / V-trace (defaults: the reference R2AC settings) or PPO."""

    name: str = "impala"  # impala | ppo
    optimizer: str = "rmsprop"  # rmsprop | adam
    lr: float = 6e-4
    lr_decay: str = "linear"  # linear (to 0 at runner.total_frames) | none
    rms_alpha: float = 0.99
    rms_eps: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    max_grad_norm: float = 40.0
    entropy_cost: float = 0.01
    baseline_cost: float = 0.5
    discount: float = 0.99
    reward_clip: float = 1.0  # clip rewards to [-c, c]; 0 disables
    clip_rho: float = 1.0
    clip_pg_rho: float = 1.0
    vtrace_lambda: float = 1.0
    # torchbeast (and the reference agent) sums losses over [T, B]; eps and clip assume it.
    loss_reduction: str = "sum"  # sum | mean
    # PPO only: epochs over each rollout, each in minibatches of whole streams
    epochs: int = 4
    minibatches: int = 4  # the rollout's streams split into this many minibatches
    clip_eps: float = 0.2  # surrogate clipping range
    value_clip_eps: float = 0.2  # value clipping range; 0 = no value clipping
    gae_lambda: float = 0.95
    normalize_advantages: bool = True  # per minibatch
    # An update whose loss or gradient is not finite is skipped; this many in a row stop
    # the run (exit 1) with the weights of the last good update.
    max_skipped_updates: int = 10

    def __post_init__(self) -> None:
        _choice(self.name, "algo.name", tuple(LEARNERS))
        _check(self.epochs >= 1, "algo.epochs", "must be >= 1")
        _check(self.max_skipped_updates >= 1, "algo.max_skipped_updates", "must be >= 1")
        _check(self.minibatches >= 1, "algo.minibatches", "must be >= 1")
        _check(self.clip_eps > 0, "algo.clip_eps", "must be > 0")
        _check(self.value_clip_eps >= 0, "algo.value_clip_eps", "must be >= 0 (0: off)")
        _check(0.0 <= self.gae_lambda <= 1.0, "algo.gae_lambda", "must be in [0, 1]")
        _choice(self.loss_reduction, "algo.loss_reduction", ("sum", "mean"))
        _choice(self.optimizer, "algo.optimizer", ("rmsprop", "adam"))
        _choice(self.lr_decay, "algo.lr_decay", ("linear", "none"))
        _check(self.lr > 0, "algo.lr", f"must be > 0, got {self.lr}")
        _check(0.0 <= self.discount <= 1.0, "algo.discount",
               f"must be in [0, 1], got {self.discount}")
        _check(self.max_grad_norm > 0, "algo.max_grad_norm", "must be > 0")
        _check(self.reward_clip >= 0, "algo.reward_clip", "must be >= 0")
        _check(self.entropy_cost >= 0, "algo.entropy_cost", "must be >= 0")
        _check(self.baseline_cost >= 0, "algo.baseline_cost", "must be >= 0")
        _check(0.0 < self.vtrace_lambda <= 1.0, "algo.vtrace_lambda", "must be in (0, 1]")


@dataclass
class RunnerConfig:
    """Collection: ``num_envs`` streams B, rollouts of ``unroll`` steps T."""

    kind: str = "sync"  # sync | async
    num_envs: int = 32
    unroll: int = 10
    total_frames: int = 2_000_000
    num_workers: int = 2  # async: env worker processes
    # async: where the policy runs: learner (its device, batched) | worker (each worker's CPU)
    # | auto (learner when the learner is on CUDA, else worker)
    inference: str = "auto"
    queue_size: int = 2  # async: rollout slots per worker (more = more policy lag)
    batch_size: int = 0  # async: streams per learner batch, from the oldest ready (0 = all)
    worker_timeout_s: float = 300.0  # async: an awaited worker silent this long is restarted
    # async, inference=learner: env groups per worker, stepped in turn (2: double buffering)
    # | 0 (auto: 2 when the learner is on CUDA, else 1)
    env_groups: int = 0
    # async: learner on CPUs of its own, env workers and inference on the rest: auto (with
    # inference=learner on the CPU) | always | never
    cpu_affinity: str = "auto"

    @property
    def streams_per_batch(self) -> int:
        return self.batch_size or self.num_envs

    @property
    def groups_per_worker(self) -> int:
        """Async with inference in the learner: a worker's streams form ``env_groups`` env
        groups (2: double buffering) when they split evenly, else one. ``env_groups=0``
        (auto) is resolved by ``TrainConfig``."""
        per_worker = self.num_envs // self.num_workers
        g = self.env_groups or 1
        return g if self.inference == "learner" and per_worker % g == 0 else 1

    @property
    def group_size(self) -> int:
        """Streams per env group: the unit a learner batch is made of."""
        return self.num_envs // self.num_workers // self.groups_per_worker

    def __post_init__(self) -> None:
        _choice(self.kind, "runner.kind", tuple(RUNNERS))
        _choice(self.inference, "runner.inference", ("auto", "learner", "worker"))
        _choice(self.cpu_affinity, "runner.cpu_affinity", ("auto", "always", "never"))
        _check(self.num_envs >= 1, "runner.num_envs", f"must be >= 1, got {self.num_envs}")
        _check(self.unroll >= 1, "runner.unroll", f"must be >= 1, got {self.unroll}")
        _check(self.total_frames >= 1, "runner.total_frames", "must be >= 1")
        _check(self.num_workers >= 1, "runner.num_workers", "must be >= 1")
        _check(self.queue_size >= 2, "runner.queue_size", "must be >= 2")
        _check(self.env_groups in (0, 1, 2), "runner.env_groups",
               f"must be 0 (auto), 1 or 2 (2: double buffering), got {self.env_groups}")
        _check(self.worker_timeout_s >= 0, "runner.worker_timeout_s", "must be >= 0 (0: never)")
        _check(self.kind != "async" or self.num_envs % self.num_workers == 0,
               "runner.num_envs", f"({self.num_envs}) must be divisible by runner.num_workers "
               f"({self.num_workers}) with runner=async")
        b = self.batch_size
        _check(0 <= b <= self.num_envs, "runner.batch_size",
               f"must be in [0, runner.num_envs={self.num_envs}], got {b}")
        if b and b != self.num_envs:
            _check(self.kind == "async", "runner.batch_size",
                   f"{b} < runner.num_envs needs runner=async (sync batches hold every stream)")
        if self.inference != "auto" and self.env_groups:  # else once TrainConfig resolved them
            self.check_batch_unit()

    def check_batch_unit(self) -> None:
        b = self.batch_size
        if b and b != self.num_envs:
            unit = self.group_size
            where = ("one env group (runner.num_envs / runner.num_workers / "
                     "runner.env_groups)" if self.groups_per_worker == 2 else
                     "one worker (runner.num_envs / runner.num_workers)")
            _check(b % unit == 0, "runner.batch_size",
                   f"must be a multiple of the {unit} streams of {where}")


@dataclass
class DistConfig:
    """Starting the job under torchrun from ``rtrl-train`` itself (a Slurm task per node)."""

    nproc_per_node: int = 0  # > 0: run as this many ranks per node (0 = this process only)
    rdzv_port: int = 29500  # multi-node rendezvous port on the first node of the allocation

    def __post_init__(self) -> None:
        _check(self.nproc_per_node >= 0, "distributed.nproc_per_node", "must be >= 0")
        _check(0 < self.rdzv_port < 65536, "distributed.rdzv_port", "must be a TCP port")


@dataclass
class TrainConfig:
    env: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    grad: GradConfig = field(default_factory=GradConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    distributed: DistConfig = field(default_factory=DistConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    torch_threads: int = 0  # intra-op threads of the learner process (0 = torch's default)
    run_dir: str = "runs/default"
    name: str = ""
    resume: str = "false"  # false | true (this run_dir) | path to a run dir
    checkpoint_interval_s: float = 300.0
    keep_checkpoints: int = 3
    max_updates: int = 0  # stop after this many updates (0 = run to total_frames)
    eval_episodes: int = 0  # evaluate the final policy on this many episodes (0 = skip)

    def __post_init__(self) -> None:
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        _check(self.checkpoint_interval_s > 0, "checkpoint_interval_s", "must be > 0")
        _check(self.max_updates >= 0, "max_updates", "must be >= 0")
        _check(self.torch_threads >= 0, "torch_threads", "must be >= 0")
        d = self.device
        _check(d in ("auto", "cpu") or d.startswith("cuda"), "device",
               f"expected auto, cpu or cuda[:N], got '{d}'")
        if self.algo.name == "ppo":
            b, m = self.runner.streams_per_batch, self.algo.minibatches
            _check(b % m == 0, "algo.minibatches",
                   f"({m}) must divide the {b} streams of a learner batch")
        rc = self.runner
        if rc.inference == "auto" or not rc.env_groups:
            import torch

            cuda = d.startswith("cuda") or (d == "auto" and torch.cuda.is_available())
            if rc.inference == "auto":
                rc.inference = "learner" if cuda else "worker"
            if not rc.env_groups:
                # Double buffering hides the device's latency behind the other group's env
                # steps. With the learner on the CPU there is no latency to hide, and twice
                # the requests per frame cost more than they overlap: on the 2-core CPU one
                # group ran faster than two (measurements: docs/performance.md).
                rc.env_groups = 2 if cuda else 1
            rc.check_batch_unit()


TOP_LEVEL = tuple(f.name for f in fields(TrainConfig))


def one_line(err: OmegaConfBaseException) -> str:
    """An OmegaConf error as one line that starts with the offending key."""
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"{key}: {msg}" if key and key not in msg else msg


def validate(cfg: DictConfig | dict) -> TrainConfig:
    """Check a composed config; return it typed. Raises a one-line ``ConfigError``."""
    from rtrl_rl.envs import validate_env_config

    raw = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    container = OmegaConf.to_container(raw, resolve=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    for key in container:
        if key not in TOP_LEVEL:
            raise unknown_name("config key", key, TOP_LEVEL)
    env = container.pop("env", {}) or {}
    if isinstance(container.get("resume"), bool):
        container["resume"] = str(container["resume"]).lower()
    try:
        schema = OmegaConf.structured(TrainConfig)
        merged = OmegaConf.merge(schema, container)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    assert isinstance(typed, TrainConfig)
    grad = GRADS[typed.grad.name]
    if not grad.supports(CORES[typed.model.core]):
        raise grad.core_error(typed.model.core)
    validate_env_config(env)
    typed.env = env
    return typed


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (for run dirs, wandb and checkpoints)."""
    out = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(out, dict)
    out["env"] = dict(cfg.env)
    return out
