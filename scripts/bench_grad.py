"""Time and peak memory of one learner update for each temporal-gradient module.

An update is: core forward over a chunk [T, B, I] (with the RTRL injection where it applies),
a linear readout loss, backward, and the sensitivity update, for each core of --cores
(elstm, rtu, lru; N units, 2 reals each for rtu and lru). For each grid point:
- times: bptt, rtrl and one_step run in one subprocess, taking turns in rounds of a few
  consecutive updates each, so that all three see the same machine state (this shared VM
  drifts by 20-30% within a minute, which swamped ratios taken from separate processes).
  ms/update is each method's median; "vs bptt" is the median over rounds of the per-round
  ratio. --repeat runs this in that many fresh subprocesses and takes medians.
- the floor, taking turns with the methods in the same rounds: what any exact RTRL must
  do per chunk beyond BPTT, namely read and write the carried sensitivity tensor once (a
  copy) and the bare rank-T update matmul ``[B, I, T] @ [B, T, M*N*K]``. RTRL's extra cost
  (rtrl - bptt) is printed as a multiple of it.
- update flops: the floor matmul's FLOPs as a share of a bptt update's matmul FLOPs (both
  counted by ``torch.utils.flop_counter``). Exact RTRL must do those FLOPs on top of
  BPTT's, so where the update ran at BPTT's FLOP rate, rtrl/bptt would be at least 1 plus
  this share (eLSTM, I=257, N=256: 16.4%, whatever B and T).
- peak memory, and the slow step-by-step reference's time (eLSTM only): one fresh
  subprocess per method. CPU: peak resident-set growth over the process's footprint before
  the first update; CUDA: torch.cuda.max_memory_allocated.

    python scripts/bench_grad.py --quick                 # B=32, T=50 and 10, N=256, eLSTM
    python scripts/bench_grad.py --json bench_grad.json  # the full grid
    python scripts/bench_grad.py --device cuda
    python scripts/bench_grad.py --quick --cores elstm,rtu,lru
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ("rtrl", "rtrl_reference", "bptt", "one_step")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _floor(core: str, b: int, t: int, n: int, i: int, device: str):
    """The floor's work (see the module docstring) and a sync."""
    import torch

    dev = torch.device(device)
    m, k = 2, (1 if core == "elstm" else 2)  # matrices per layer, reals per unit
    s_src = torch.randn(b, i, m * n * k, device=dev)
    s_dst = torch.empty_like(s_src)
    x_t = torch.randn(b, i, t, device=dev)
    pu = torch.randn(b, t, m * n * k, device=dev)
    out = torch.empty_like(s_src)

    def update() -> None:
        s_dst.copy_(s_src)
        torch.bmm(x_t, pu, out=out)

    return update, lambda: torch.cuda.synchronize() if dev.type == "cuda" else None


def _updater(method: str, b: int, t: int, n: int, i: int, device: str, core_kind: str = "elstm"):
    """One benchmark update for ``method`` (own core, readout, carried state) and a sync;
    method ``floor``: the floor's work."""
    import torch

    from rtrl_rl.grad import make_grad
    from rtrl_rl.malloc import keep_freed_memory
    from rtrl_rl.models.registry import make_core

    keep_freed_memory()  # as the learner does (rtrl_rl.malloc)
    if method == "floor":
        return _floor(core_kind, b, t, n, i, device)
    torch.manual_seed(0)
    dev = torch.device(device)
    core = make_core(core_kind, i, n).to(dev)
    readout = torch.nn.Linear(core.output_size, 16).to(dev)
    grad = make_grad(method, core, b)
    x = torch.randn(t, b, i, device=dev)
    first = torch.rand(t, b, device=dev) < 0.01
    state = core.initial_state(b, device=dev)

    def update() -> None:
        nonlocal state
        xx = x.clone().requires_grad_(True)  # stands in for the stem's output
        h, new_state = grad.unroll(xx, state, first)
        loss = readout(h).square().mean()
        loss.backward()
        state = new_state.detach()
        for p in list(core.parameters()) + list(readout.parameters()):
            p.grad = None

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return update, sync


def _timed(update, sync, reps: int) -> list[float]:
    """Milliseconds of ``reps`` consecutive updates, each synchronised (CUDA)."""
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        update()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


# ms figures keep 3 decimals: the floor's work at tiny sizes takes a few microseconds.
def worker(method: str, b: int, t: int, n: int, i: int, device: str, reps: int,
           core: str = "elstm") -> dict:
    import torch

    dev = torch.device(device)
    update, sync = _updater(method, b, t, n, i, device, core)
    base_rss = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    for _ in range(2):
        update()
    times = _timed(update, sync, reps)
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    row = {
        "method": method, "core": core, "B": b, "T": t, "N": n, "I": i, "device": device,
        "ms_per_update": round(statistics.median(times), 3),
        "peak_mb": round(max(peak, 0.0), 1),
        "threads": torch.get_num_threads(),
    }
    if method in ("bptt", "floor"):  # the kernels of rtrl's own update are not counted
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            update()
        row["matmul_flops"] = int(counter.get_total_flops())
    return row


def paired_worker(methods: list[str], b: int, t: int, n: int, i: int, device: str,
                  rounds: int, block: int, core: str = "elstm") -> dict:
    """All ``methods`` in one process, taking turns in rounds, so that every method sees the
    same machine state (this VM drifts by 20-30% within a minute). In a round each method
    runs one untimed update, which re-warms the caches the previous method evicted, then
    ``block`` timed ones, as consecutive updates run in training. Strict one-by-one
    alternation flattered rtrl by 0.02-0.07 (0.04 on average): rtrl's 17 MB of
    sensitivities evict bptt's working set. Returns per-method median ms and, per method,
    the median over rounds of its round time (median of its block) divided by the first
    method's."""
    ups = {m: _updater(m, b, t, n, i, device, core) for m in methods}
    for update, _ in ups.values():
        update()
    per_round: dict[str, list[float]] = {m: [] for m in methods}
    every: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(rounds):
        for m, (update, sync) in ups.items():
            update()
            times = _timed(update, sync, block)
            per_round[m].append(statistics.median(times))
            every[m] += times
    base = per_round[methods[0]]
    return {
        "core": core, "B": b, "T": t, "N": n, "I": i, "device": device, "rounds": rounds,
        "block": block,
        "ms_per_update": {m: round(statistics.median(v), 3) for m, v in every.items()},
        f"ratio_to_{methods[0]}": {
            m: round(statistics.median(a / c for a, c in zip(v, base, strict=True)), 3)
            for m, v in per_round.items()},
    }


def _subprocess(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def grid_point(t: int, n: int, b: int, i: int, methods: list[str], args,
               core: str = "elstm") -> list[dict]:
    """Rows for one (core, T, N): paired times for the fast methods and the floor, a fresh
    process per method for peak memory (and for the reference's time)."""
    fast = [m for m in ("bptt", "rtrl", "one_step") if m in methods]
    if fast and fast[0] != "bptt":
        fast.insert(0, "bptt")  # the ratios' baseline
    if "rtrl" in fast:
        fast.append("floor")
    runs = [_subprocess("--paired-worker", ",".join(fast), str(b), str(t), str(n), str(i),
                        args.device, str(args.rounds), str(args.block), core)
            for _ in range(args.repeat if fast else 0)]
    rows = []
    if core != "elstm":  # the step-by-step reference is eLSTM-only
        methods = [m for m in methods if m != "rtrl_reference"]
    for m in [*methods, *(["floor"] if "floor" in fast else [])]:
        reps = 6 if m == "rtrl_reference" else 2
        row = _subprocess("--worker", m, str(b), str(t), str(n), str(i), args.device, str(reps),
                          core)
        if m in fast:
            row["ms_per_update"] = round(statistics.median(
                r["ms_per_update"][m] for r in runs), 3)
            row["ratio_to_bptt"] = round(statistics.median(
                r["ratio_to_bptt"][m] for r in runs), 3)
            row["paired_runs"] = len(runs)
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="learner update: forward + backward + sensitivity update")
    for col in ("core", "method", "B", "T", "N", "I", "ms/update", "peak MB", "vs bptt",
                "extra / floor", "update flops"):
        table.add_column(col, justify="right")
    key = lambda r: (r.get("core", "elstm"), r["T"], r["N"])  # noqa: E731
    bptt = {key(r): r["ms_per_update"] for r in rows if r["method"] == "bptt"}
    floor = {key(r): r["ms_per_update"] for r in rows if r["method"] == "floor"}
    flops = {(key(r), r["method"]): r.get("matmul_flops") for r in rows}
    for r in rows:
        ratio = r.get("ratio_to_bptt")
        if ratio is None and key(r) in bptt and r["method"] != "floor":  # the reference
            ratio = r["ms_per_update"] / bptt[key(r)]
        extra = share = "-"
        if r["method"] == "rtrl" and key(r) in floor and key(r) in bptt:
            extra = f"{(r['ms_per_update'] - bptt[key(r)]) / floor[key(r)]:.2f}x"
            update, base = flops.get((key(r), "floor")), flops.get((key(r), "bptt"))
            if update and base:
                share = f"+{update / base:.1%}"
        table.add_row(key(r)[0], r["method"], str(r["B"]), str(r["T"]), str(r["N"]),
                      str(r["I"]), f"{r['ms_per_update']:.1f}", f"{r['peak_mb']:.0f}",
                      "-" if ratio is None else f"{ratio:.2f}x", extra, share)
    ms = {(r["method"], r["T"], r["N"]): r["ms_per_update"] for r in rows
          if r.get("core", "elstm") == "elstm"}
    speedups = [f"T={t} N={n}: {ms[('rtrl_reference', t, n)] / v:.1f}x"
                for (m, t, n), v in ms.items() if m == "rtrl" and ("rtrl_reference", t, n) in ms]
    caption = ["update flops: the rank-T update's matmul FLOPs over a bptt update's (a "
               "bound on rtrl/bptt where both run at the same FLOP rate)"]
    if speedups:
        caption.append("step-by-step reference / chunked rtrl: " + ", ".join(speedups))
    table.caption = "\n".join(caption)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--paired-worker":
        ms, b, t, n, i, dev, rounds, block, *core = sys.argv[2:11]
        print(json.dumps(paired_worker(ms.split(","), int(b), int(t), int(n), int(i), dev,
                                       int(rounds), int(block), *core)))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        m, b, t, n, i, dev, reps, *core = sys.argv[2:10]
        print(json.dumps(worker(m, int(b), int(t), int(n), int(i), dev, int(reps), *core)))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="only B=32, N=256, T=50 and 10")
    ap.add_argument("--cores", default="elstm", help="comma-separated: elstm, rtu, lru")
    ap.add_argument("--points", metavar="T:N,...", help="grid points instead of the grid, "
                    "e.g. 50:256,50:512")
    ap.add_argument("--batch", type=int, default=32, help="streams B (32)")
    ap.add_argument("--json", metavar="PATH", help="write the rows here")
    ap.add_argument("--rounds", type=int, default=8, help="rounds per paired run")
    ap.add_argument("--block", type=int, default=4,
                    help="timed consecutive updates per method per round")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeat", type=int, default=3,
                    help="paired runs per grid point, each in a fresh process; medians")
    args = ap.parse_args()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    b, i = args.batch, 257
    cores = args.cores.split(",")
    if sorted(set(cores) - {"elstm", "rtu", "lru"}):
        ap.error(f"--cores: choose from elstm, rtu, lru, got {args.cores!r}")
    grid = ([(50, 256), (10, 256)] if args.quick
            else [(t, n) for n in (128, 256, 512) for t in (10, 50, 100)])
    if args.points:
        try:
            grid = [(int(t), int(n)) for t, n in (p.split(":") for p in args.points.split(","))]
        except ValueError:
            ap.error(f"--points: expected T:N[,T:N...], got {args.points!r}")
    from rich.progress import Progress

    rows: list[dict] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(grid) * len(cores))
        for core in cores:
            for t, n in grid:
                progress.update(task, description=f"{core} T={t} N={n}")
                rows += grid_point(t, n, b, i, methods, args, core)
                progress.advance(task)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
