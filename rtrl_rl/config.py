"""Typed run configuration: a dataclass per component, validated before anything starts.

Hydra composes ``configs/`` into a plain tree; ``validate(cfg)`` merges each group into its
dataclass: the learner's (``algo.name`` selects it from ``LEARNERS``), the runner's
(``runner.kind``, from ``RUNNERS``) and the model's, whose core options sit in one block per
core (``model.elstm``, ``model.rtu``, ...; each core class names its options dataclass).
Unknown keys, another component's options and wrong types fail; the range checks run in
``__post_init__``; the env options are checked by the env family's own schema. Every
failure is a one-line ``ConfigError`` naming the key. Field docs are the attribute
docstrings, which ``rtrl-train --help`` prints (``config_help.py``).

The registries are read once, at import, after ``rtrl_rl.plugins.load_plugins()`` has let
plugins add to them.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rtrl_rl.algos import LEARNERS
from rtrl_rl.algos.impala import ImpalaConfig
from rtrl_rl.algos.learner import LearnerConfig
from rtrl_rl.errors import ConfigError, check, choice, unknown_name
from rtrl_rl.grad import GRADS
from rtrl_rl.models.registry import CORES, check_options
from rtrl_rl.plugins import load_plugins
from rtrl_rl.run_logger import LoggerConfig
from rtrl_rl.runners import RUNNERS
from rtrl_rl.runners.runner_config import RunnerConfig

# Plugins register their cores, learners and env families now, before the schema, the
# option blocks and Hydra's nodes below are derived from the registries.
load_plugins()


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


@dataclass
class ModelBase:
    """Agent: stem -> FC -> [features, clipped prev reward, prev action] -> core -> heads.
    The core's own options are in the block named for it (``model.elstm``, ``model.rtu``,
    ...); only the block of ``model.core`` is used."""

    stem: str = "auto"
    """Observation encoder: ``impala`` (ResNet 16-32-32), ``nature`` (DQN conv), ``mlp``, or
    ``auto`` (``impala`` for image observations, ``mlp`` for vectors)."""
    stem_hidden: list[int] = field(default_factory=lambda: [64])
    """The MLP stem's layer sizes."""
    stem_out: int = 256
    """Width of the FC layer after a conv stem."""
    core: str = "elstm"
    """The recurrent core (``rtrl_rl.models.registry.CORES``; ``none``: feed-forward)."""
    hidden_size: int = 64
    """Units per layer (RTU, LRU: complex units, two reals each)."""
    layers: int = 1
    """Stacked core layers (RTRL is then exact per layer, approximate across layers)."""
    prev_reward: bool = True
    """Feed the clipped previous reward to the core."""
    prev_action: bool = False
    """Feed the previous action to the core."""
    first_input: bool = False
    """An input column that is 1 at an episode's first step (what POPGym's Antialias wrapper
    adds): a cell whose state starts at zero cannot otherwise tell the first step apart."""
    amp: str = "none"
    """``bf16``: autocast the stem and heads (the core and RTRL stay float32)."""
    compile_stem: bool = False
    """``torch.compile`` the stem, in each process that runs it."""

    def __post_init__(self) -> None:
        choice(self.stem, "model.stem", ("auto", "impala", "nature", "mlp"))
        choice(self.amp, "model.amp", ("none", "bf16"))
        choice(self.core, "model.core", tuple(CORES))
        check(self.hidden_size >= 1, "model.hidden_size", f"must be >= 1, got {self.hidden_size}")
        check(self.layers >= 1, "model.layers", f"must be >= 1, got {self.layers}")
        check(self.stem_out >= 1, "model.stem_out", f"must be >= 1, got {self.stem_out}")
        check(all(h >= 1 for h in self.stem_hidden), "model.stem_hidden", "sizes must be >= 1")
        for name in CORE_BLOCKS:  # every block, so a typo in an unused one fails too
            check_options(name, getattr(self, name))

    def core_options(self) -> dict[str, Any]:
        """The options of ``core`` as keywords for ``make_core`` (none for a core without)."""
        return asdict(getattr(self, self.core)) if self.core in CORE_BLOCKS else {}


log = logging.getLogger(__name__)

#: Cores with options of their own: each is a block ``model.<name>`` of its options class.
CORE_BLOCKS = tuple(name for name, cls in CORES.items() if fields(cls.options))

ModelConfig = make_dataclass(
    "ModelConfig",
    [(name, CORES[name].options, field(default_factory=CORES[name].options))
     for name in CORE_BLOCKS],
    bases=(ModelBase,))
ModelConfig.__module__ = __name__
ModelConfig.__doc__ = ModelBase.__doc__


@dataclass
class GradConfig:
    """The one switch for recurrent credit."""

    name: str = "rtrl"
    """How gradients cross time steps (``rtrl_rl.grad.GRADS``): ``rtrl`` (exact RTRL),
    ``bptt`` (truncated to ``runner.unroll``), ``one_step``."""

    def __post_init__(self) -> None:
        choice(self.name, "grad.name", tuple(GRADS))


@dataclass
class DistConfig:
    """Starting the job under torchrun from ``rtrl-train`` itself (a Slurm task per node)."""

    nproc_per_node: int = 0
    """> 0: run as this many ranks per node (0: this process only)."""
    rdzv_port: int = 29500
    """Multi-node rendezvous port on the first node of the allocation."""

    def __post_init__(self) -> None:
        check(self.nproc_per_node >= 0, "distributed.nproc_per_node", "must be >= 0")
        check(0 < self.rdzv_port < 65536, "distributed.rdzv_port", "must be a TCP port")


@dataclass
class TrainConfig:
    """One training run: the groups below, and how to run, resume and save it."""

    env: dict[str, Any] = field(default_factory=dict)
    """The environment; checked by its family's own schema (``rtrl_rl.envs.FAMILIES``)."""
    model: ModelBase = field(default_factory=ModelConfig)
    """The agent."""
    grad: GradConfig = field(default_factory=GradConfig)
    """The gradient method."""
    algo: LearnerConfig = field(default_factory=ImpalaConfig)
    """The learner; ``algo.name`` selects its dataclass."""
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    """Collection; ``runner.kind`` selects its dataclass."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Where metrics go."""
    distributed: DistConfig = field(default_factory=DistConfig)
    """torchrun."""
    seed: int = 0
    """Seeds the envs, the weights and the action samples."""
    device: str = "auto"
    """The learner's device: ``auto`` (CUDA when there is one), ``cpu``, ``cuda``, ``cuda:N``."""
    torch_threads: int = 0
    """Intra-op threads of the learner process (0: torch's default)."""
    run_dir: str = "runs/default"
    """Where config.yaml, metrics.csv, the log and checkpoints go."""
    name: str = ""
    """A name for loggers (W&B run name)."""
    resume: str = "false"
    """``false``, ``true`` (this ``run_dir``) or a path to a run dir or checkpoint file."""
    checkpoint_interval_s: float = 300.0
    """Seconds between checkpoints (one is always written at the end and on interrupt)."""
    keep_checkpoints: int = 3
    """Checkpoints kept in ``run_dir/checkpoints``."""
    max_updates: int = 0
    """Stop after this many updates (0: run to ``runner.total_frames``)."""
    eval_episodes: int = 0
    """Play the final policy for this many new episodes on the env's eval split (ProcGen:
    held-out levels) and write ``run_dir/eval.json`` (0: skip)."""

    def __post_init__(self) -> None:
        check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        check(self.checkpoint_interval_s > 0, "checkpoint_interval_s", "must be > 0")
        check(self.max_updates >= 0, "max_updates", "must be >= 0")
        check(self.torch_threads >= 0, "torch_threads", "must be >= 0")
        d = self.device
        check(d in ("auto", "cpu") or d.startswith("cuda"), "device",
              f"expected auto, cpu or cuda[:N], got '{d}'")
        cuda = d.startswith("cuda") or (d == "auto" and torch.cuda.is_available())
        self.runner.resolve(cuda)
        self.algo.check_batch(self.runner.streams_per_batch)


TOP_LEVEL = tuple(f.name for f in fields(TrainConfig))
#: The groups whose dataclass a name in them selects: group -> (key, name -> dataclass).
VARIANTS: dict[str, tuple[str, dict[str, type]]] = {
    "algo": ("name", {k: v.config for k, v in LEARNERS.items()}),
    "runner": ("kind", {k: v.config for k, v in RUNNERS.items()}),
}
#: Keys of configs saved before the core options had blocks: old key -> option name.
FLAT_CORE_KEYS = {"forget_bias": "forget_bias", "rtu_recurrence": "recurrence",
                  "rtu_readout": "readout", "r_min": "r_min", "r_max": "r_max",
                  "max_phase": "max_phase"}


def one_line(err: OmegaConfBaseException) -> str:
    """An OmegaConf error as one line that starts with the offending key."""
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"{key}: {msg}" if key and key not in msg else msg


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def misplaced(key: str, chosen: Mapping[str, str] | None = None) -> str | None:
    """Why the dotted ``key`` is not an option here, if it is one elsewhere: an option of
    another learner or runner than ``chosen`` (group -> name) names, or a core option given
    outside its core's block. None for a key that is nowhere."""
    group, _, name = key.partition(".")
    if group in VARIANTS:
        classes = VARIANTS[group][1]
        owners = [n for n, c in classes.items() if name in _names(c)]
        mine = (chosen or {}).get(group)
        if owners and mine not in owners:
            where = f", not of {group}={mine}" if mine else " only"
            return f"{key}: an option of {group}={'|'.join(owners)}{where}"
    if group == "model" and name in FLAT_CORE_KEYS:
        return (f"{key}: a core's options are in its block, e.g. "
                f"model.<core>.{FLAT_CORE_KEYS[name]} (cores with options: "
                f"{', '.join(CORE_BLOCKS)})")
    return None


def _check_variant_keys(container: dict[str, Any]) -> None:
    """An option of another learner/runner/core, given to this one: one line that says whose
    option it is (before OmegaConf's generic "key not in dataclass")."""
    chosen = {}
    for group, (key, classes) in VARIANTS.items():
        node = container.get(group) or {}
        chosen[group] = str(node.get(key, fields_default(TrainConfig, group, key)))
        choice(chosen[group], f"{group}.{key}", tuple(classes))
    for group in (*VARIANTS, "model"):
        for k in container.get(group) or {}:
            why = misplaced(f"{group}.{k}", chosen)
            if why:
                raise ConfigError(why)


def fields_default(cls: type, group: str, key: str) -> Any:
    """The default of ``key`` in the dataclass ``cls`` puts at ``group``."""
    return getattr({f.name: f for f in fields(cls)}[group].default_factory(), key)


def upgrade_saved(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A config saved by an older version in today's layout: the core's flat options move
    into its block; options of other learners or runners (every field used to be in every
    config) are dropped. A current config comes back unchanged."""
    out = copy.deepcopy(dict(tree))
    model = out.get("model") or {}
    core = model.get("core", "elstm")
    for old, new in FLAT_CORE_KEYS.items():
        if old in model:
            value = model.pop(old)
            if core in CORE_BLOCKS and new in _names(CORES[core].options):
                model.setdefault(core, {}).setdefault(new, value)
    for group, (key, classes) in VARIANTS.items():
        node = out.get(group) or {}
        chosen = node.get(key)
        if chosen in classes:
            own = _names(classes[chosen])
            for k in [k for k in node if k not in own]:
                node.pop(k)
    return out


def schema(container: Mapping[str, Any]) -> TrainConfig:
    """The typed defaults ``container`` merges into: the learner and runner dataclasses
    that its ``algo.name`` and ``runner.kind`` select."""
    picked = {}
    for group, (key, classes) in VARIANTS.items():
        node = container.get(group) or {}
        picked[group] = classes[str(node.get(key, fields_default(TrainConfig, group, key)))]()
    return TrainConfig(**picked)


def validate(cfg: DictConfig | Mapping[str, Any], saved: bool = False) -> TrainConfig:
    """Check a composed config; return it typed. ``saved``: a config read back from a run
    (``upgrade_saved`` first). Raises a one-line ``ConfigError``."""
    from rtrl_rl.envs import validate_env_config

    raw = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    container = OmegaConf.to_container(raw, resolve=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    if saved:
        container = upgrade_saved(container)
    for key in container:
        if key not in TOP_LEVEL:
            raise unknown_name("config key", key, TOP_LEVEL)
    env = container.pop("env", {}) or {}
    if isinstance(container.get("resume"), bool):
        container["resume"] = str(container["resume"]).lower()
    runner = container.get("runner") or {}
    if runner.get("kind") == "auto":
        from rtrl_rl.runners.sizing import Machine, plan

        learner = LEARNERS.get(str((container.get("algo") or {}).get("name", "impala")))
        machine = Machine.detect(str(container.get("device", "auto")))
        container["runner"], line = plan(runner, machine,
                                         lag_ok=bool(learner and learner.corrects_lag))
        log.info(line)
    _check_variant_keys(container)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema(container)), container)
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


def _register_core_blocks() -> None:
    """Every core's option block, with its defaults, under ``model`` in the composed config
    (``configs/config.yaml`` lists ``core_options`` before the model preset), so that
    ``model.lru.r_min=0.5`` is an override like any other."""
    from hydra.core.config_store import ConfigStore

    node = {name: asdict(CORES[name].options()) for name in CORE_BLOCKS}
    ConfigStore.instance().store(name="core_options", package="model", node=node)


_register_core_blocks()
