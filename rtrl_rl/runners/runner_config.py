"""The runners' options: ``RunnerConfig`` (every runner: the sync one's all) and
``AsyncRunnerConfig`` (env worker processes, policy placement, batching). ``runner.kind``
picks the dataclass through ``rtrl_rl.runners.RUNNERS``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from rtrl_rl.errors import ConfigError, check, choice


@dataclass
class RunnerConfig:
    """Collection: ``num_envs`` streams B, rollouts of ``unroll`` steps T. The sync runner
    steps the envs in the learner process between updates."""

    kind: str = "sync"
    """The runner (``rtrl_rl.runners.RUNNERS``); selects the rest of this group's fields."""
    num_envs: int = 32
    """Env streams B (the job's total under torchrun, split over the ranks)."""
    unroll: int = 10
    """Rollout length T: env steps per stream between updates (RTRL's chunk, TBPTT's window)."""
    total_frames: int = 2_000_000
    """Training budget in env frames (after frame skip)."""

    #: Fields that are the job's totals, split evenly over torchrun ranks.
    per_rank: ClassVar[tuple[str, ...]] = ("num_envs",)

    def __post_init__(self) -> None:
        from rtrl_rl.runners import RUNNERS

        choice(self.kind, "runner.kind", tuple(RUNNERS))
        check(RUNNERS[self.kind].config is type(self), "runner.kind",
              f"'{self.kind}' takes {RUNNERS[self.kind].config.__name__}, "
              f"not {type(self).__name__}")
        check(self.num_envs >= 1, "runner.num_envs", f"must be >= 1, got {self.num_envs}")
        check(self.unroll >= 1, "runner.unroll", f"must be >= 1, got {self.unroll}")
        check(self.total_frames >= 1, "runner.total_frames", "must be >= 1")

    @property
    def streams_per_batch(self) -> int:
        """Streams in one learner batch."""
        return self.num_envs

    def resolve(self, cuda: bool) -> None:
        """Settle the ``auto`` choices for a learner on CUDA (``cuda``) or on the CPU."""

    def split(self, ranks: int) -> RunnerConfig:
        """This rank's share when ``ranks`` ranks share the job's streams evenly."""
        share = {}
        for key in self.per_rank:
            n = getattr(self, key)
            if n % ranks:
                raise ConfigError(f"runner.{key} ({n}) must be divisible by the world size "
                                  f"({ranks}): each rank takes runner.{key} / {ranks} of the "
                                  "job's streams")
            share[key] = n // ranks
        try:
            return replace(self, **share)
        except ConfigError as e:
            raise ConfigError(f"with {ranks} ranks ({self.num_envs // ranks} streams each): "
                              f"{e}") from None


@dataclass
class AsyncRunnerConfig(RunnerConfig):
    """Env worker processes feed rollouts through shared memory to the learner."""

    kind: str = "async"
    """The runner (``rtrl_rl.runners.RUNNERS``); selects the rest of this group's fields."""
    num_workers: int = 2
    """Env worker processes; ``num_envs`` must divide evenly among them."""
    inference: str = "auto"
    """Where the policy runs: ``learner`` (its device, batched over the workers), ``worker``
    (each worker's CPU) or ``auto`` (learner when the learner is on CUDA, else worker)."""
    queue_size: int = 2
    """Rollout slots per worker (more slots: more policy lag)."""
    batch_size: int = 0
    """Streams per learner batch, from the oldest ready rollouts (0: all ``num_envs``)."""
    worker_timeout_s: float = 300.0
    """A worker awaited and silent this long is killed and restarted (0: never)."""
    env_groups: int = 0
    """With ``inference=learner``: env groups per worker, stepped in turn (2: double
    buffering; 0: 2 with a CUDA learner, else 1)."""
    cpu_affinity: str = "auto"
    """Learner on CPUs of its own, env workers and inference on the rest: ``auto`` (with
    ``inference=learner`` on the CPU), ``always`` or ``never``."""

    per_rank: ClassVar[tuple[str, ...]] = ("num_envs", "batch_size")

    @property
    def streams_per_batch(self) -> int:
        return self.batch_size or self.num_envs

    @property
    def groups_per_worker(self) -> int:
        """With inference in the learner, a worker's streams form ``env_groups`` env groups
        (2: double buffering) when they split evenly, else one."""
        per_worker = self.num_envs // self.num_workers
        g = self.env_groups or 1
        return g if self.inference == "learner" and per_worker % g == 0 else 1

    @property
    def group_size(self) -> int:
        """Streams per env group: the unit a learner batch is made of."""
        return self.num_envs // self.num_workers // self.groups_per_worker

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.inference, "runner.inference", ("auto", "learner", "worker"))
        choice(self.cpu_affinity, "runner.cpu_affinity", ("auto", "always", "never"))
        check(self.num_workers >= 1, "runner.num_workers", "must be >= 1")
        check(self.queue_size >= 2, "runner.queue_size", "must be >= 2")
        check(self.env_groups in (0, 1, 2), "runner.env_groups",
              f"must be 0 (auto), 1 or 2 (2: double buffering), got {self.env_groups}")
        check(self.worker_timeout_s >= 0, "runner.worker_timeout_s", "must be >= 0 (0: never)")
        check(self.num_envs % self.num_workers == 0, "runner.num_envs",
              f"({self.num_envs}) must be divisible by runner.num_workers "
              f"({self.num_workers}) with runner=async")
        b = self.batch_size
        check(0 <= b <= self.num_envs, "runner.batch_size",
              f"must be in [0, runner.num_envs={self.num_envs}], got {b}")
        if self.inference != "auto" and self.env_groups:  # else once resolved
            self.check_batch_unit()

    def resolve(self, cuda: bool) -> None:
        if self.inference == "auto":
            self.inference = "learner" if cuda else "worker"
        if not self.env_groups:
            # Double buffering hides the device's latency behind the other group's env
            # steps; a CPU learner has none to hide, and twice the requests cost more.
            self.env_groups = 2 if cuda else 1
        self.check_batch_unit()

    def check_batch_unit(self) -> None:
        """A partial batch must be whole env groups (or whole workers)."""
        b = self.batch_size
        if b and b != self.num_envs:
            unit = self.group_size
            where = ("one env group (runner.num_envs / runner.num_workers / "
                     "runner.env_groups)" if self.groups_per_worker == 2 else
                     "one worker (runner.num_envs / runner.num_workers)")
            check(b % unit == 0, "runner.batch_size",
                  f"must be a multiple of the {unit} streams of {where}")
