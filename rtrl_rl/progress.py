"""Progress display for training runs: a rich progress bar on a terminal, plain periodic
lines elsewhere (logs, CI, Slurm), or nothing."""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections import deque


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _hms(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _si(n: float) -> str:
    """12345678 -> '12.3M'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return str(int(n))


class Progress:
    """Frames, recent fps, last finite return and loss; printed as a plain line every
    ``interval_s`` when ``plain`` (``frames=... fps=... return=... loss=...``), else silent."""

    window_s = 30.0  # fps is measured over roughly this many recent seconds

    def __init__(self, total: int, start: int, interval_s: float, name: str, plain: bool) -> None:
        self.total, self.frames, self.interval_s, self.name = total, start, interval_s, name
        self.plain = plain
        self.ret: float | None = None
        self.loss: float | None = None
        self.t0 = time.monotonic()
        self._window: deque[tuple[float, int]] = deque([(self.t0, start)], maxlen=4096)
        self._last_print: float | None = None
        self._pending = False

    def update(self, frames: int, ret: float | None, loss: float | None) -> None:
        now = time.monotonic()
        self.frames = frames
        self._window.append((now, frames))
        while len(self._window) > 2 and now - self._window[0][0] > self.window_s:
            self._window.popleft()
        if ret is not None and math.isfinite(ret):
            self.ret = ret
        if loss is not None and math.isfinite(loss):
            self.loss = loss
        self._show(now)

    def fps(self) -> float:
        (t0, f0), (t1, f1) = self._window[0], self._window[-1]
        return (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self) -> str:
        fps = self.fps()
        pct = f" ({100 * self.frames / self.total:.1f}%)" if self.total > 0 else ""
        left = (self.total - self.frames) / fps if fps > 0 and self.total > 0 else None
        return (
            f"frames={self.frames}/{self.total}{pct} fps={fps:.0f} return={_fmt(self.ret)} "
            f"loss={_fmt(self.loss)} elapsed={_hms(time.monotonic() - self.t0)} "
            f"eta={'-' if left is None else _hms(left)}"
        )

    def _show(self, now: float) -> None:
        if not self.plain:
            return
        if self._last_print is None or now - self._last_print >= self.interval_s:
            self._last_print, self._pending = now, False
            print(self.line(), flush=True)
        else:
            self._pending = True

    def close(self) -> None:
        if self._pending:  # the final state, if not printed yet
            self._pending = False
            print(self.line(), flush=True)


class RichProgress(Progress):
    """A rich progress bar; ``update`` only stores fields, rich's thread redraws at 2 Hz."""

    def __init__(self, total: int, start: int, interval_s: float, name: str) -> None:
        super().__init__(total, start, interval_s, name, plain=False)
        from rich import progress as rp

        self._bar = rp.Progress(
            rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.TaskProgressColumn(),
            rp.TextColumn("{task.fields[frames]} frames  {task.fields[fps]} fps"),
            rp.TimeElapsedColumn(), rp.TextColumn("eta"), rp.TimeRemainingColumn(),
            refresh_per_second=2,
        )
        self._task = self._bar.add_task(
            "", total=total if total > 0 else None, completed=start, frames="", fps="-"
        )
        self._show(self.t0)
        self._bar.start()

    def _show(self, now: float) -> None:
        self._bar.update(
            self._task, completed=self.frames, description=f"{self.name} return {_fmt(self.ret)}",
            frames=f"{_si(self.frames)}/{_si(self.total)}", fps=f"{self.fps():,.0f}",
        )

    def close(self) -> None:
        self._bar.stop()


def make_progress(mode: str, total: int, start: int, interval_s: float, name: str) -> Progress:
    """The progress display for ``mode``: auto (rich on a TTY), rich, plain or none."""
    if mode == "auto":
        try:
            mode = "rich" if sys.stdout.isatty() else "plain"
        except (AttributeError, ValueError):  # stdout replaced or closed
            mode = "plain"
    if mode == "rich":
        return RichProgress(total, start, interval_s, name)
    return Progress(total, start, interval_s, name, plain=mode == "plain")
