"""Start a training job as torchrun ranks from inside ``rtrl-train`` itself.

``rtrl-train distributed.nproc_per_node=K ...`` runs ``torchrun --nproc_per_node=K -m
rtrl_rl.train ...`` with the same overrides and run dir. Inside a Slurm allocation of
several nodes (one task per node, as ``+sweep=slurm_multinode`` submits it) each node's
task starts its torchrun with the rendezvous read from the Slurm environment: the first
node of ``SLURM_JOB_NODELIST`` hosts it, ``SLURM_NNODES`` nodes join, ``SLURM_NODEID`` is
this node's rank. Outside Slurm, or on one node, the rendezvous is torchrun's standalone one.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Overrides that the relaunched ranks must not see again.
_DROP = ("distributed.nproc_per_node=", "run_dir=", "hydra.run.dir=", "hydra.sweep.")


def first_host(nodelist: str) -> str:
    """The first host name of a Slurm node list: ``gpu[03-05,9],cpu1`` -> ``gpu03``."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m or not m.group(1):
        raise ValueError(f"cannot read a host from SLURM_JOB_NODELIST={nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def rendezvous_args(environ: Mapping[str, str], port: int) -> list[str]:
    """torchrun's node arguments: Slurm's nodes when there are several, else standalone."""
    nnodes = int(environ.get("SLURM_NNODES", environ.get("SLURM_JOB_NUM_NODES", "1")))
    if nnodes <= 1:
        return ["--standalone"]
    head = first_host(environ["SLURM_JOB_NODELIST"])
    return [f"--nnodes={nnodes}", f"--node_rank={int(environ['SLURM_NODEID'])}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={head}:{port}",
            f"--rdzv_id={environ.get('SLURM_JOB_ID', 'rtrl')}"]


def torchrun_argv(nproc_per_node: int, port: int, run_dir: str, overrides: Sequence[str],
                  environ: Mapping[str, str]) -> list[str]:
    """The command that runs this job's overrides as ``nproc_per_node`` ranks per node."""
    kept = [o for o in overrides if not o.startswith(_DROP)]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous_args(environ, port),
            f"--nproc_per_node={nproc_per_node}", "-m", "rtrl_rl.train", *kept,
            f"run_dir={run_dir}", f"hydra.run.dir={run_dir}"]


def final_return(run_dir: str | Path) -> float:
    """The last ``return_mean`` in the run's metrics.csv (the relaunched job's objective)."""
    try:
        with open(Path(run_dir) / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["return_mean"])
    except (OSError, IndexError, KeyError, ValueError):
        return math.nan


def relaunch(nproc_per_node: int, port: int, run_dir: str, overrides: Sequence[str],
             environ: Mapping[str, str]) -> tuple[int, float]:
    """Run the job under torchrun and wait; returns (exit code, final return_mean)."""
    argv = torchrun_argv(nproc_per_node, port, run_dir, overrides, environ)
    code = subprocess.call(argv, env=dict(environ))
    return code, final_return(run_dir)
