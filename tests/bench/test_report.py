"""The report's numbers against hand computations on synthetic run dirs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from rtrl_rl.bench.launcher import STATE, write_json
from rtrl_rl.bench.report import build_rows, comparisons, frames_to, write_report
from rtrl_rl.bench.suite import MethodSpec, RunSpec, SuiteConfig, TaskSpec
from rtrl_rl.sweep import Run

FRAMES = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]


def make_run(run_dir, core, grad, unroll, seed, returns, frames=1000, wall=60.0, flag=True):
    run_dir.mkdir(parents=True)
    config = {"model": {"core": core, "first_input": flag}, "grad": {"name": grad},
              "runner": {"unroll": unroll}, "seed": seed, "run_dir": str(run_dir),
              "logger": {"csv": True}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    rows = ["env_frames,return_mean"] + [f"{f},{r}" for f, r in zip(FRAMES, returns,
                                                                    strict=True)]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    write_json(run_dir / STATE, {"status": "done", "frames": frames, "wall_s": wall})


# per method: (core, grad, unroll, returns of seeds 0..2)
CURVES = {
    "a_rtrl": ("elstm", "rtrl", 10, [
        [-.5, -.2, .1, .4, .7, .9, .9, .8, .9, .9],
        [-.5, -.5, -.1, .3, .6, .8, 1., .9, .9, .9],
        [-.5, -.4, .0, .2, .5, .7, .8, .9, .95, .9]]),
    "a_bptt": ("elstm", "bptt", 10, [
        [-.5] * 10, [-.5, -.4, -.45, -.5, -.5, -.5, -.5, -.5, -.5, -.6], [-.5] * 9 + [-.3]]),
    "ff": ("none", "bptt", 10, [[-.5] * 10, [-.4] * 10, [-.6] * 10]),
    "a_rtrl_noflag": ("elstm", "rtrl", 10, [[-.5] * 10] * 3),  # differs in more than grad
}


@pytest.fixture
def suite_runs(tmp_path):
    suite = SuiteConfig(name="t", out=str(tmp_path), tasks=["T"], methods=list(CURVES),
                        seeds=3, reps=500,
                        task_specs={"T": TaskSpec(frames=1000, episode_length=5,
                                                  max_return=1.0, published_best=0.75,
                                                  published_gru=0.7)},
                        method_specs={m: MethodSpec() for m in CURVES})
    runs = []
    for m, (core, grad, unroll, curves) in CURVES.items():
        for seed, returns in enumerate(curves):
            d = tmp_path / "runs" / "T" / m / f"seed{seed}"
            make_run(d, core, grad, unroll, seed, returns, flag=not m.endswith("noflag"))
            runs.append(RunSpec("T", m, seed, 1000, d, ()))
    return suite, runs


def test_rows_match_hand_computed_values(suite_runs):
    suite, runs = suite_runs
    rows, _, thresholds = build_rows(suite, runs, {"T": -0.5}, {("T", m): (10, 20)
                                                               for m in CURVES})
    by = {r.method: r for r in rows}
    rtrl = by["a_rtrl"]
    # MMER per seed: 0.9, 1.0, 0.95; with 3 seeds the IQM trims nothing: their mean
    assert rtrl.mmer_seeds == pytest.approx([0.9, 1.0, 0.95])
    assert rtrl.mmer_iqm == pytest.approx(0.95)
    # final: the last 10% of 10 values is the last value
    assert by["a_bptt"].final_iqm == pytest.approx(np.mean([-.5, -.6, -.3]))
    # threshold: 90% of the way from the random -0.5 to the best MMER IQM 0.95
    assert thresholds["T"] == pytest.approx(-0.5 + 0.9 * 1.45)
    # seed 0 first reaches 0.805 at 600 frames, seed 1 at 700, seed 2 at 800: median 700
    assert rtrl.frames_seeds == [600.0, 700.0, 800.0] and rtrl.frames_to_threshold == 700
    assert rtrl.reached == 3 and by["a_bptt"].reached == 0
    assert by["a_bptt"].frames_seeds == [1000.0] * 3  # never: the whole budget
    assert rtrl.normalized == pytest.approx((0.95 + 0.5) / (0.75 + 0.5))
    assert rtrl.normalized_max == pytest.approx((0.95 + 0.5) / 1.5)
    assert (rtrl.params_core, rtrl.params_total, rtrl.wall_s) == (10, 20, 60.0)


def test_comparison_says_who_wins(suite_runs):
    suite, runs = suite_runs
    rows, _, _ = build_rows(suite, runs, {"T": -0.5}, {("T", m): (1, 1) for m in CURVES})
    (comp,) = comparisons(rows, reps=500)
    assert (comp["rtrl"], comp["bptt"], comp["core"], comp["unroll"]) == (
        "a_rtrl", "a_bptt", "elstm", 10)
    assert comp["mmer_diff"] == pytest.approx(0.95 - np.mean([-.5, -.4, -.3]))
    assert comp["mmer_winner"] == "rtrl" and comp["frames_winner"] == "rtrl"
    assert comp["frames_diff"] == pytest.approx(1000 - 700)


def test_tie_when_the_interval_holds_zero(suite_runs):
    suite, runs = suite_runs
    rows, _, _ = build_rows(suite, runs, {"T": -0.5}, {("T", m): (1, 1) for m in CURVES})
    for r in rows:  # make bptt's seeds straddle rtrl's mean
        if r.method == "a_bptt":
            r.mmer_seeds = [0.5, 1.4, 0.95]
    (comp,) = comparisons(rows, reps=500)
    assert comp["mmer_winner"] == "tie"


def test_frames_to_threshold():
    run = Run(path=None, config={}, frames=np.array([10., 20., 30.]),
              values=np.array([0., .5, 1.]))
    assert frames_to(run, 0.5, 99) == 20.0 and frames_to(run, 2.0, 99) == 99.0


def test_report_files(suite_runs):
    suite, runs = suite_runs
    out = write_report(suite, runs, {"T": -0.5}, {("T", m): (1, 2) for m in CURVES},
                       "rtrl-bench suite=t")
    md = (out / "report.md").read_text()
    assert "12 of 12 runs finished" in md and "| a_rtrl | elstm | rtrl | 10 | 3 | 0.950" in md
    assert (out / "curves_T.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    row = summary["rows"][0]
    for key in ("task", "core", "grad", "unroll", "seeds", "mmer_iqm", "final_iqm",
                "published_gru", "published_best"):
        assert key in row
    assert summary["finished"] == 12 and summary["comparisons"][0]["mmer_winner"] == "rtrl"


def test_normalised_by_the_best_published_score_known(suite_runs):
    suite, runs = suite_runs
    spec = suite.task_specs["T"]
    spec.published_best, spec.published_gru = None, 1.0  # only the GRU's is known
    rows, _, _ = build_rows(suite, runs, {"T": -0.5}, {("T", m): (1, 1) for m in CURVES})
    assert rows[0].normalized == pytest.approx((0.95 + 0.5) / 1.5)
    spec.published_gru = None
    rows, _, _ = build_rows(suite, runs, {"T": -0.5}, {("T", m): (1, 1) for m in CURVES})
    assert rows[0].normalized is None
    spec.published = {"TBPTT": 0.5, "RTRL": 2.0}  # a paper's scores per method: the best
    rows, _, _ = build_rows(suite, runs, {"T": -0.5}, {("T", m): (1, 1) for m in CURVES})
    assert rows[0].normalized == pytest.approx((0.95 + 0.5) / 2.5)
