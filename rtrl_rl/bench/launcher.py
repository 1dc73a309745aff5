"""Running a suite's grid: ``jobs`` ``rtrl-train`` processes at a time, resumably.

Each run writes ``bench_run.json`` beside its ``metrics.csv``: ``running`` while its process
lives, ``done`` (with the frames it trained for) after a clean exit, ``failed`` otherwise.
A re-run of the suite skips the runs that are done at the current budget and starts every
other one with ``resume=true``, so a run that was killed goes on from its last checkpoint
and a run with no checkpoint starts fresh. Each child dies with the suite (``PDEATHSIG``),
so a suite killed with SIGKILL leaves no orphan training; SIGINT or SIGTERM stop every run
at its next update with a checkpoint.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rtrl_rl.bench.suite import RunSpec
from rtrl_rl.run_logger import write_atomic

STATE = "bench_run.json"
LOG = "train.log"
#: What the suite sends its runs when it is stopped, by any signal: they checkpoint and exit.
RUN_STOP = signal.SIGTERM
_PR_SET_PDEATHSIG = 1


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    write_atomic(path, json.dumps(data, indent=1) + "\n")


def read_state(run_dir: Path) -> dict:
    try:
        state = json.loads((run_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def is_done(run: RunSpec) -> bool:
    """Finished at this run's budget (a larger budget later makes it resume)."""
    state = read_state(run.run_dir)
    return state.get("status") == "done" and int(state.get("frames", -1)) >= run.frames


def logged_frames(run_dir: Path) -> int:
    """The env_frames of the last row of ``metrics.csv`` (0 when there is none)."""
    try:
        with open(run_dir / "metrics.csv", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().splitlines()
        return int(float(lines[-1].split(b",")[0])) if lines else 0
    except (OSError, ValueError, IndexError):
        return 0


def _die_with_parent() -> None:
    """In the child, before exec: the kernel SIGKILLs it when the suite process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: a killed suite may leave a run behind
        pass


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


@dataclass
class _Active:
    run: RunSpec
    proc: subprocess.Popen
    log: TextIO
    started: float
    start_frames: int
    signalled: bool = False


@dataclass
class GridResult:
    """What ``Grid.run`` did: runs already done, finished now and failed, and the signal that
    stopped it."""

    skipped: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    signal: int | None = None
    """The signal (SIGINT, SIGTERM) that stopped the grid, if one did."""


class Grid:
    """Launch the runs not yet done, ``jobs`` at once, with a progress line for the whole
    grid (done, running, left, frames per second, expected time left)."""

    def __init__(self, runs: list[RunSpec], jobs: int, threads: int,
                 progress_every_s: float = 30.0, out: TextIO | None = None) -> None:
        self.runs = runs
        self.jobs = jobs
        self.threads = threads
        self.progress_every_s = progress_every_s
        self.out = out or sys.stderr
        self._stop: int | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        n = str(self.threads)
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, NUMBA_NUM_THREADS=n,
                   PYTHONUNBUFFERED="1")
        return env

    def _start(self, run: RunSpec) -> _Active:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        state = read_state(run.run_dir)
        attempts = int(state.get("attempts", 0)) + 1
        write_json(run.run_dir / STATE, {**state, "status": "running", "attempts": attempts,
                                         "frames": run.frames})
        log = open(run.run_dir / LOG, "a")
        log.write(f"# rtrl-bench attempt {attempts}: rtrl-train {' '.join(run.overrides)}\n")
        log.flush()
        proc = subprocess.Popen([sys.executable, "-m", "rtrl_rl.train", *run.overrides],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self._env(), preexec_fn=_die_with_parent,
                                start_new_session=True)  # a Ctrl-C reaches the suite only
        return _Active(run, proc, log, time.monotonic(), logged_frames(run.run_dir))

    def _finish(self, a: _Active, code: int) -> str:
        a.log.close()
        state = read_state(a.run.run_dir)
        wall = float(state.get("wall_s", 0.0)) + time.monotonic() - a.started
        stopped = self._stop is not None and code in (128 + RUN_STOP, -RUN_STOP)
        status = "done" if code == 0 else ("stopped" if stopped else "failed")
        write_json(a.run.run_dir / STATE, {**state, "status": status, "returncode": code,
                                           "wall_s": wall, "frames": a.run.frames})
        return status

    def _handle(self, signum, frame) -> None:
        self._stop = signum

    def _progress(self, done: int, active: list[_Active], left: int, t0: float,
                  trained: int, remaining_frames: int) -> None:
        elapsed = time.monotonic() - t0
        now_frames = trained + sum(max(0, logged_frames(a.run.run_dir) - a.start_frames)
                                   for a in active)
        rate = now_frames / elapsed if elapsed > 0 else 0.0
        todo = remaining_frames - now_frames
        eta = _fmt_time(todo / rate) if rate > 0 else "?"
        print(f"rtrl-bench: {done}/{len(self.runs)} runs done, {len(active)} running, {left} "
              f"left; {rate:,.0f} fps; about {eta} left", file=self.out, flush=True)

    def run(self) -> GridResult:
        result = GridResult()
        pending = []
        for run in self.runs:
            if is_done(run):
                result.skipped.append(run.key)
            else:
                pending.append(run)
        remaining_frames = sum(r.frames - logged_frames(r.run_dir) for r in pending)
        print(f"rtrl-bench: {len(self.runs)} runs, {len(result.skipped)} already done, "
              f"{len(pending)} to run, {self.jobs} at a time with {self.threads} thread(s) each",
              file=self.out, flush=True)
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        active: list[_Active] = []
        t0, last, trained = time.monotonic(), 0.0, 0
        try:
            while (pending or active) and not (self._stop and not active):
                while pending and len(active) < self.jobs and self._stop is None:
                    active.append(self._start(pending.pop(0)))
                time.sleep(0.2)
                if self._stop is not None:
                    for a in active:  # once: a second signal could land after its handler
                        if a.proc.poll() is None and not a.signalled:
                            a.proc.send_signal(RUN_STOP)
                            a.signalled = True
                changed = False
                for a in list(active):
                    code = a.proc.poll()
                    if code is None:
                        continue
                    active.remove(a)
                    trained += max(0, logged_frames(a.run.run_dir) - a.start_frames)
                    status = self._finish(a, code)
                    changed = True
                    if status == "done":
                        result.finished.append(a.run.key)
                    elif status == "failed":
                        result.failed.append(a.run.key)
                        print(f"rtrl-bench: {a.run.key} failed (exit {code}); its log: "
                              f"{a.run.run_dir / LOG}", file=self.out, flush=True)
                now = time.monotonic()
                if changed or now - last > self.progress_every_s:
                    done = len(result.skipped) + len(result.finished)
                    self._progress(done, active, len(pending), t0, trained, remaining_frames)
                    last = now
        finally:
            for a in active:  # only on an exception here: do not leave runs behind
                a.proc.kill()
                a.proc.wait()
                self._finish(a, a.proc.returncode)
            for s, h in old.items():
                signal.signal(s, h)
        result.signal = self._stop
        return result
