"""Keep freed memory in the process instead of handing it back to the kernel (glibc only).

A learner update allocates and frees the same few-megabyte tensors every time (activations,
their gradients, the RTRL factors). glibc serves blocks above its mmap threshold (128 KB at
first, raised adaptively up to 32 MB) with fresh ``mmap`` calls and unmaps them on free, and
trims the heap top past its trim threshold, so the next update touches new pages and takes
a page fault for every 4 KB of them. PyTorch's CPU performance guide recommends an allocator
that keeps memory (jemalloc, tcmalloc) for the same reason. Raising both thresholds does it
with glibc itself: on the 2-core CPU (2026-12-04) a ``bench_grad.py`` paired run at B=32,
T=50, N=256 took 48,000 minor faults instead of 349,000. The trim threshold does most of
it: in ``tests/test_malloc.py``'s small case, 7 faults per update with both, 13 with it
alone, 109 with the mmap threshold alone, 145 with neither. The time saved is small against
that machine's drift: in three interleaved ``bench_grad.py --quick`` runs each way,
rtrl/bptt was 1.21, 1.26, 1.19 with this against 1.22, 1.27, 1.18 without at T=50, and
1.38, 1.41, 1.41 against 1.37, 1.47, 1.46 at T=10.

The cost is memory the process keeps after a peak (up to the trim threshold above what it
uses), which a learner that repeats the same update reuses anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

#: Blocks below this come from the heap, which is reused (glibc's own cap for its adaptive
#: threshold on 64-bit systems; the learner's largest block, ``S``, is 17 MB at N=256).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the heap top kept before trimming.
TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where the C
    library is not glibc or refuses. Thresholds apply to later allocations and frees."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (a glibc-only symbol: fail elsewhere)
    except (OSError, AttributeError, TypeError):
        log.debug("malloc: not glibc (%s), thresholds left as they are", name)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("malloc: mmap threshold %d MB, trim threshold %d MB: %s", MMAP_THRESHOLD >> 20,
              TRIM_THRESHOLD >> 20, "set" if ok else "refused")
    return ok
