"""Copy task generator: token layout, targets, masks, streams across chunk boundaries."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.envs.copy_task import CopyTaskStream, copy_task_batch, copy_task_in_dim


def test_batch_layout_and_targets():
    L, B, V = 5, 7, 2
    batch = copy_task_batch(L, B, num_symbols=V, seed=0)
    T = 2 * L + 1
    assert batch.inputs.shape == (T, B, V + 2) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (T, B) and batch.targets.dtype == torch.int64
    assert batch.mask.shape == (T, B) and batch.mask.dtype == torch.bool
    assert batch.first.shape == (T, B) and batch.first.dtype == torch.bool
    assert (batch.inputs.sum(-1) == 1).all()  # one token per step
    tokens = batch.inputs.argmax(-1)
    pattern = tokens[:L]
    assert (pattern < V).all()
    assert (tokens[L] == V).all()  # delimiter
    assert (tokens[L + 1:] == V + 1).all()  # blanks while recalling
    assert torch.equal(batch.targets[L + 1:], pattern)
    assert (batch.targets[: L + 1] == 0).all()
    assert batch.mask[L + 1:].all() and not batch.mask[: L + 1].any()
    assert batch.first[0].all() and not batch.first[1:].any()
    assert copy_task_in_dim(V) == V + 2


def test_patterns_are_random_and_seeded():
    a = copy_task_batch(16, 64, seed=1)
    assert torch.equal(a.inputs, copy_task_batch(16, 64, seed=1).inputs)
    assert not torch.equal(a.inputs, copy_task_batch(16, 64, seed=2).inputs)
    bits = a.inputs.argmax(-1)[:16].float()
    assert 0.4 < bits.mean().item() < 0.6


def _check_stream(chunks, L, V):
    """Concatenate chunks and check every recall target against the input L + 1 steps back."""
    inputs = torch.cat([c.inputs for c in chunks])
    targets = torch.cat([c.targets for c in chunks])
    mask = torch.cat([c.mask for c in chunks])
    first = torch.cat([c.first for c in chunks])
    tokens = inputs.argmax(-1)
    T, B = tokens.shape
    for b in range(B):  # test-side reference loop
        for t in range(T):
            if mask[t, b]:
                assert tokens[t, b] == V + 1
                assert targets[t, b] == tokens[t - L - 1, b]
                assert not first[t - L - 1 + 1: t + 1, b].any()  # same episode
            if first[t, b] and t > 0:
                assert tokens[t - 1, b] == V + 1 and tokens[t, b] < V
    return tokens, mask, first


def test_stream_is_back_to_back_episodes_across_chunks():
    L, B, V = 3, 4, 3
    stream = CopyTaskStream(L, B, num_symbols=V, seed=5)
    chunks = [stream.next(n) for n in (4, 7, 1, 10, 14)]  # 36 steps = 5 episodes + 1
    tokens, mask, first = _check_stream(chunks, L, V)
    E = 2 * L + 1
    starts = torch.zeros_like(first)
    starts[::E] = True
    assert torch.equal(first, starts)
    assert mask.sum() == 5 * L * B


def test_staggered_stream_masks_the_unseen_first_episode():
    L, B, V = 4, 32, 2
    stream = CopyTaskStream(L, B, num_symbols=V, seed=0, stagger=True)
    tokens, mask, first = _check_stream([stream.next(9), stream.next(30)], L, V)
    assert first[0].all()  # the stream starts a fresh state everywhere
    E = 2 * L + 1
    start_pos = [int(first[1:, b].nonzero()[0]) + 1 for b in range(B)]
    assert len(set(start_pos)) > 1  # phases differ across streams
    for b, s in enumerate(start_pos):
        offset = (E - s) % E  # phase at t = 0
        if offset != 0:
            assert not mask[:s, b].any()
        assert mask[s:, b].sum() == ((39 - s) // E) * L + max(0, (39 - s) % E - L - 1)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="length"):
        CopyTaskStream(0, 2)
    with pytest.raises(ValueError, match="num_steps"):
        CopyTaskStream(2, 2).next(0)


def test_variable_lengths_follow_the_reference_protocol():
    """min_length=1: each episode's pattern length is drawn from [1, L]; every episode is
    pattern, delimiter, recall of the same length, back to back, in any chunking."""
    L, B, V = 6, 8, 2
    whole = CopyTaskStream(L, B, num_symbols=V, seed=3, min_length=1).next(120)
    parts = CopyTaskStream(L, B, num_symbols=V, seed=3, min_length=1)
    chunked = [parts.next(n) for n in (1, 13, 50, 56)]
    for field in ("inputs", "targets", "mask", "first"):
        assert torch.equal(getattr(whole, field), torch.cat([getattr(c, field) for c in chunked]))
    tokens = whole.inputs.argmax(-1)
    lengths = []
    for b in range(B):  # test-side parse of each stream into episodes
        starts = whole.first[:, b].nonzero().flatten().tolist() + [120]
        for s, e in zip(starts[:-2], starts[1:-1], strict=True):  # complete episodes only
            n = (e - s - 1) // 2
            assert e - s == 2 * n + 1 and 1 <= n <= L
            lengths.append(n)
            pattern = tokens[s : s + n, b]
            assert (pattern < V).all() and tokens[s + n, b] == V
            assert (tokens[s + n + 1 : e, b] == V + 1).all()
            assert torch.equal(whole.targets[s + n + 1 : e, b], pattern)
            assert whole.mask[s + n + 1 : e, b].all() and not whole.mask[s : s + n + 1, b].any()
    assert min(lengths) < 3 and max(lengths) > L - 2  # the range is covered


def test_variable_length_batch_pads_after_the_episode():
    L, B = 5, 64
    batch = copy_task_batch(L, B, seed=0, min_length=1)
    assert batch.inputs.shape[0] == 2 * L + 1 and batch.first[0].all()
    n = batch.mask.sum(0)  # recall steps = pattern length per column
    assert n.min() >= 1 and n.max() <= L and len(set(n.tolist())) > 2
    tokens = batch.inputs.argmax(-1)
    for b in range(B):
        k = int(n[b])
        assert torch.equal(batch.targets[k + 1 : 2 * k + 1, b], tokens[:k, b])
        assert (tokens[2 * k + 1 :, b] == 2 + 1).all()  # padding: blanks without targets
        assert not batch.first[1:, b].any()


def test_rejects_bad_min_length():
    with pytest.raises(ValueError, match="min_length"):
        CopyTaskStream(4, 2, min_length=5)
    with pytest.raises(ValueError, match="min_length"):
        CopyTaskStream(4, 2, min_length=0)
