"""The weight board: readers only ever get a whole version, and no death blocks anyone."""

from __future__ import annotations

import os
import signal
import time

import torch
import torch.multiprocessing as mp
from torch import nn

from rtrl_rl.runners.weights import WeightBoard

WIDE = 1024


def _net(value: float = 0.0, width: int = 64) -> nn.Module:
    net = nn.Sequential(nn.Linear(width, width), nn.Linear(width, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    return net


def _values(net: nn.Module) -> set[float]:
    return {float(v) for p in net.parameters() for v in p.detach().flatten().unique()}


def test_read_gives_the_latest_published_version():
    board = WeightBoard(_net(0.0))
    reader = _net(-1.0)
    assert board.read_into(reader) == 0 and _values(reader) == {0.0}
    for v in (1, 2, 3):
        assert board.publish(_net(float(v)).state_dict()) == v
    assert board.latest == 3
    assert board.read_into(reader) == 3 and _values(reader) == {3.0}


def _publish_forever(board: WeightBoard, stop) -> None:
    v = 0
    while not stop.is_set():
        v += 1
        board.publish({k: torch.full_like(t, float(v)) for k, t in board.buffers[0].items()})


def test_concurrent_reads_are_never_torn():
    """A publisher process rewrites the weights as fast as it can (every tensor holds the
    version number); every read must hold one value, equal to the version it returns."""
    board = WeightBoard(_net(0.0, WIDE))  # copies long enough for the writer to lap a reader
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_publish_forever, args=(board, stop), daemon=True)
    proc.start()
    try:
        reader, seen = _net(width=WIDE), set()
        deadline = time.time() + 30
        while len(seen) < 40 and time.time() < deadline:
            v = board.read_into(reader)
            assert _values(reader) == {float(v)}, (v, sorted(_values(reader))[:5])
            seen.add(v)
        assert len(seen) >= 40, "the publisher did not get going"
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def test_a_writer_that_died_mid_write_does_not_block_readers():
    board = WeightBoard(_net(0.0))
    board.publish(_net(1.0).state_dict())
    # Version 2 begun in buffer 0 and never finished: the counter stays odd.
    board.meta[1] = 2 * 2 - 1
    board.buffers[0]["0.weight"].fill_(99.0)
    reader = _net()
    t0 = time.time()
    assert board.read_into(reader) == 1 and _values(reader) == {1.0}
    assert time.time() - t0 < 1.0


def _read_forever(board: WeightBoard) -> None:
    reader = _net()
    while True:
        board.read_into(reader)


def test_a_reader_killed_mid_copy_does_not_block_the_publisher():
    board = WeightBoard(_net(0.0))
    proc = mp.get_context("spawn").Process(target=_read_forever, args=(board,), daemon=True)
    proc.start()
    time.sleep(3.0)  # well into its read loop
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)
    t0 = time.time()
    for v in range(1, 51):
        assert board.publish(_net(float(v)).state_dict()) == v
    assert time.time() - t0 < 5.0
    reader = _net()
    assert board.read_into(reader) == 50 and _values(reader) == {50.0}
