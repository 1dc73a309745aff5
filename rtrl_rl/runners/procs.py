"""Process primitives the async runner's processes share: the shared-memory rollout slots,
one ``poll`` object to wait on pipes, the guard every child process runs its body in, and
the freed-slot messages. The processes themselves: ``policy_worker.py`` (env worker with the
policy in it), ``env_worker.py`` (env-only worker) and ``inference_server.py``.
"""

from __future__ import annotations

import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import fields

import torch

from rtrl_rl.errors import EnvDataError
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.affinity import pin_process


def alloc_slots(spec, num_envs: int, unroll: int, state_size: int, count: int,
                dtype: torch.dtype, param_size: int) -> list[Rollout]:
    """``count`` preallocated shared-memory rollouts of ``num_envs`` streams; ``param_size``
    is the width of the action distribution's parameters."""
    t1 = unroll + 1
    act = spec.action
    slots = []
    for _ in range(count):
        r = Rollout(
            obs=torch.zeros(t1, num_envs, *spec.obs_shape, dtype=spec.obs_dtype),
            reward=torch.zeros(t1, num_envs),
            first=torch.zeros(t1, num_envs, dtype=torch.bool),
            prev_action=torch.zeros(t1, num_envs, *act.shape, dtype=act.dtype),
            action=torch.zeros(t1, num_envs, *act.shape, dtype=act.dtype),
            dist_params=torch.zeros(t1, num_envs, param_size),
            core_state=torch.zeros(num_envs, state_size, dtype=dtype),
            stream_ids=torch.zeros(num_envs, dtype=torch.long),
            policy_version=torch.zeros(num_envs, dtype=torch.long),
        )
        for f in fields(r):
            getattr(r, f.name).share_memory_()
        slots.append(r)
    return slots


class Waiter:
    """Waits until one of a fixed set of connections is readable (or closed), through one
    ``select.poll`` object built once: ``multiprocessing.connection.wait`` builds and
    fills a selector on every call, which was a tenth of an env worker's CPU time in the
    default job. It first polls for up to ``spin_s`` seconds (yielding the CPU between
    polls): a reply that comes within that time is taken without the process going to
    sleep and being woken, which costs more than the poll on a small machine."""

    def __init__(self, conns: list, spin_s: float) -> None:
        self.spin_s = spin_s
        self._poller = select.poll()
        self._conns = {}
        for conn in conns:
            self._poller.register(conn.fileno(), select.POLLIN)
            self._conns[conn.fileno()] = conn

    def _ready(self, timeout_ms: int) -> list:
        return [self._conns[fd] for fd, _ in self._poller.poll(timeout_ms)]

    def wait(self, timeout: float) -> list:
        """The ready connections, after at most ``timeout`` seconds (``[]``: none)."""
        if self.spin_s > 0:
            deadline = time.perf_counter() + self.spin_s
            while True:
                ready = self._ready(0)
                if ready:
                    return ready
                if time.perf_counter() > deadline:
                    break
                os.sched_yield()
        return self._ready(int(timeout * 1000))


class LearnerGone(Exception):
    """The learner asked to stop, or its end of the pipe is closed."""


def guarded(conn, body: Callable[[int], None], cpus: tuple[int, ...] = ()) -> None:
    """Run a worker's ``body(parent_pid)`` pinned to ``cpus`` (if any): report an exception
    over ``conn``, then die; exit quietly when the learner is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the learner process handles Ctrl-C
    pin_process(cpus)  # before torch or numba start thread pools, which inherit it
    torch.set_num_threads(1)
    try:
        body(os.getppid())
    except LearnerGone:
        pass
    except EnvDataError as e:  # bad env data: not a crash a restart would cure
        try:
            conn.send(("fatal", str(e)))
        except OSError:
            pass
        raise SystemExit(2) from None
    except Exception:  # report, then die: the learner decides what to do
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
        raise


def take_messages(conn, free: list[list[int]], parent: int, timeout: float) -> None:
    """Collect freed ``(group, slot)`` pairs into ``free[group]``; wait up to ``timeout`` s
    for the first message. ``LearnerGone`` on a stop message, EOF or a new parent."""
    if os.getppid() != parent:
        raise LearnerGone
    try:
        ready = conn.poll(timeout)
        while ready:
            msg = conn.recv()
            if msg is None:
                raise LearnerGone
            free[msg[0]].append(int(msg[1]))
            ready = conn.poll(0)
    except (EOFError, OSError):
        raise LearnerGone from None


def send_frame(conn, frame: bytes) -> None:
    """One fixed-size message on a step pipe, in one write (a few bytes: the kernel moves
    it whole). ``Connection.send_bytes``/``recv_bytes`` frame a message as a length header
    and a payload that the reader takes in two reads: a reader killed between them (the
    inference process, SIGKILLed) leaves the payload to be read as the next header, and
    the pipe's next reader blocks for ever."""
    os.write(conn.fileno(), frame)


def recv_frame(conn, size: int) -> bytes:
    """One fixed-size message of ``size`` bytes (see ``send_frame``)."""
    frame = os.read(conn.fileno(), size)
    if not frame:
        raise EOFError
    while len(frame) < size:  # only while a writer is inside its one write
        more = os.read(conn.fileno(), size - len(frame))
        if not more:
            raise EOFError
        frame += more
    return frame
