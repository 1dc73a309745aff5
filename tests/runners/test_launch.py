"""rtrl-train starting itself under torchrun: the command it builds, on one node and on a
Slurm allocation of several, and a real two-rank run started that way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rtrl_rl.runners.launch import final_return, first_host, rendezvous_args, torchrun_argv

SLURM = {"SLURM_NNODES": "3", "SLURM_NODEID": "2", "SLURM_JOB_ID": "4711",
         "SLURM_JOB_NODELIST": "gpu[07-09]"}


@pytest.mark.parametrize("nodelist,host", [
    ("gpu[07-09]", "gpu07"), ("gpu[3,5-6],cpu1", "gpu3"), ("n001", "n001"),
    ("a-b[10-11]", "a-b10"), ("x1,x2", "x1")])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_rendezvous_is_standalone_on_one_node_and_on_the_first_slurm_node_otherwise():
    assert rendezvous_args({}, 29500) == ["--standalone"]
    assert rendezvous_args({**SLURM, "SLURM_NNODES": "1"}, 29500) == ["--standalone"]
    assert rendezvous_args(SLURM, 1234) == [
        "--nnodes=3", "--node_rank=2", "--rdzv_backend=c10d",
        "--rdzv_endpoint=gpu07:1234", "--rdzv_id=4711"]


def test_torchrun_command_keeps_the_job_overrides_and_pins_the_run_dir():
    argv = torchrun_argv(4, 29500, "/runs/a", ["grad=bptt", "distributed.nproc_per_node=4",
                                               "run_dir=/elsewhere", "seed=2"], SLURM)
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    i = argv.index("-m", 3)
    assert "--nproc_per_node=4" in argv[:i] and "--node_rank=2" in argv[:i]
    assert argv[i + 1:] == ["rtrl_rl.train", "grad=bptt", "seed=2", "run_dir=/runs/a",
                            "hydra.run.dir=/runs/a"]


def test_final_return_reads_the_last_row_or_is_nan(tmp_path):
    assert final_return(tmp_path) != final_return(tmp_path)  # nan: no metrics.csv
    (tmp_path / "metrics.csv").write_text("env_frames,return_mean\n10,0.25\n20,0.5\n")
    assert final_return(tmp_path) == 0.5


def test_rtrl_train_starts_its_own_ranks(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "rtrl_rl.train", "distributed.nproc_per_node=2",
         f"run_dir={tmp_path}", "env.delay=5", "model.hidden_size=8",
         "runner.num_envs=4", "runner.unroll=5", "max_updates=4"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert float(last["world_size"]) == 2 and float(last["updates"]) == 4
    assert int(last["env_frames"]) == 4 * 5 * 4
