"""A run owns its directory: an exclusive ``fcntl`` lock on ``run_dir/.lock`` for its life.

The lock is tied to the open file, so the kernel releases it when the process dies, however
it dies; a stale ``.lock`` file left by a killed run never blocks the next one. The file
holds the PID of the run that holds it, for the error message of the run that does not.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rtrl_rl.errors import ConfigError

LOCK_NAME = ".lock"


class RunDirLock:
    """``with RunDirLock(run_dir):`` ... raises ``ConfigError`` if another process holds it."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"run_dir {self.path.parent}: cannot use it ({e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"run_dir {self.path.parent} is in use by another run (PID {holder}); "
                "wait for it to end, stop it, or pick another run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays, harmlessly
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
