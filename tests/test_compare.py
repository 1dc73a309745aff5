"""rtrl-compare on synthetic run dirs with known values: discovery, grouping, final
performance, IQM and bootstrap CIs, outputs, and the one-line errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rtrl_rl import compare
from rtrl_rl.compare import (
    differing_keys,
    final_value,
    group_runs,
    grouping_keys,
    iqm_with_ci,
    main,
)
from rtrl_rl.sweep import Run, find_run_dirs, flatten, load_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPS = ["--reps", "200"]


def base_config(**changes) -> dict:
    """A config.yaml tree shaped like the real one (only the parts that matter here)."""
    cfg = {
        "env": {"family": "delayed_recall", "num_cues": 4, "delay": 3},
        "model": {"core": "elstm", "stem_hidden": [64]},
        "grad": {"name": "rtrl"},
        "algo": {"lr": 0.001},
        "runner": {"unroll": 10, "total_frames": 2000},
        "logger": {"wandb_group": None},
        "seed": 0, "run_dir": "x", "name": "", "resume": "false",
    }
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def write_run(path, config: dict, values, frames=None, metric="return_mean"):
    """A run dir with config.yaml and metrics.csv (env_frames, loss, metric, fps)."""
    path.mkdir(parents=True)
    config = {**config, "run_dir": str(path)}
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    frames = frames if frames is not None else [100 * (i + 1) for i in range(len(values))]
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_frames", "loss/total", metric, "fps"])
        for fr, v in zip(frames, values, strict=False):
            w.writerow([fr, 1.0, v, 1000.0])
    return path


def run_main(capsys, *argv):
    main([str(a) for a in argv])
    return capsys.readouterr()


def expect_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rtrl-compare: error: "), err
    return err[-1]


# ------------------------------------------------------------------ pieces


def test_final_value_is_mean_of_last_fraction():
    v = np.arange(1.0, 11.0)  # 1..10
    assert final_value(v, 0.1) == 10.0
    assert final_value(v, 0.2) == 9.5
    assert final_value(v, 1.0) == 5.5
    assert final_value(np.arange(30.0), 0.1) == 28.0  # last 3 (0.1 * 30 is not quite 3)
    assert final_value(np.array([4.0, 7.0]), 0.1) == 7.0  # at least one value


def test_flatten_gives_dotted_keys_and_hashable_lists():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": (1, 2), "d": None}


def test_runs_found_recursively_skipping_hidden_and_inside_runs(tmp_path):
    a = write_run(tmp_path / "sweep" / "0_a", base_config(), [1.0])
    b = write_run(tmp_path / "sweep" / "nested" / "1_b", base_config(seed=1), [1.0])
    write_run(tmp_path / "sweep" / "0_a" / "checkpoints" / "inner", base_config(), [1.0])
    write_run(tmp_path / "sweep" / ".hidden" / "run", base_config(), [1.0])
    found = find_run_dirs([tmp_path / "sweep", a])  # a twice: once
    assert found == [a.resolve(), b.resolve()]


def test_grouping_by_the_keys_that_differ_ignoring_seed_and_bookkeeping(tmp_path):
    runs = []
    for i, (grad, seed) in enumerate([("rtrl", 0), ("rtrl", 1), ("bptt", 0), ("bptt", 1)]):
        cfg = base_config(**{"grad.name": grad, "seed": seed, "name": f"job{i}",
                             "logger.wandb_group": f"g{i}", "resume": str(i)})
        runs.append(load_run(write_run(tmp_path / f"r{i}", cfg, [float(i)]), "return_mean"))
    assert differing_keys(runs) == ["grad.name"]
    groups = group_runs(runs, differing_keys(runs), 0.1)
    assert [g.label for g in groups] == ["grad=bptt", "grad=rtrl"]
    assert [len(g.runs) for g in groups] == [2, 2]
    assert groups[0].finals.tolist() == [2.0, 3.0] and groups[1].finals.tolist() == [0.0, 1.0]


def test_two_keys_label_and_numeric_order(tmp_path):
    runs = [
        load_run(write_run(tmp_path / f"r{u}{g}", base_config(
            **{"runner.unroll": u, "grad.name": g}), [1.0]), "return_mean")
        for u in (20, 5, 10) for g in ("rtrl", "bptt")
    ]
    keys = differing_keys(runs)
    assert keys == ["grad.name", "runner.unroll"]
    labels = [g.label for g in group_runs(runs, keys, 0.1)]
    assert labels[:3] == ["grad=bptt, runner.unroll=5", "grad=bptt, runner.unroll=10",
                          "grad=bptt, runner.unroll=20"]
    assert len(labels) == 6


def test_learners_group_by_algo_name_without_the_keys_their_presets_set(tmp_path):
    presets = {"impala": {"algo.lr": 6e-4, "algo.loss_reduction": "sum"},
               "ppo": {"algo.lr": 2.5e-4, "algo.loss_reduction": "mean"}}
    runs = [load_run(write_run(tmp_path / f"{a}{g}{s}", base_config(
        **{"algo.name": a, **presets[a], "grad.name": g, "seed": s}), [1.0]), "return_mean")
        for a in presets for g in ("rtrl", "bptt") for s in (0, 1)]
    assert grouping_keys(runs) == ["algo.name", "grad.name"]
    labels = [g.label for g in group_runs(runs, grouping_keys(runs), 0.1)]
    assert labels == ["algo=impala, grad=bptt", "algo=impala, grad=rtrl",
                      "algo=ppo, grad=bptt", "algo=ppo, grad=rtrl"]
    # a key that varies within one learner still groups
    runs.append(load_run(write_run(tmp_path / "ppo_lr", base_config(
        **{"algo.name": "ppo", "algo.lr": 1e-3, "algo.loss_reduction": "mean",
           "grad.name": "rtrl"}), [1.0]), "return_mean"))
    assert grouping_keys(runs) == ["algo.lr", "algo.name", "grad.name"]


def test_iqm_point_estimate_and_ci_by_hand():
    finals = {"a": np.array([1.0, 2.0, 3.0, 10.0]), "const": np.full(3, 0.25),
              "one": np.array([7.0]), "three": np.array([1.0, 2.0, 6.0])}
    est = iqm_with_ci(finals, reps=500)
    iqm, low, high = est["a"]
    assert iqm == pytest.approx(2.5)  # middle two of four: (2 + 3) / 2
    assert 1.0 <= low <= iqm <= high <= 10.0 and high - low > 0
    assert est["const"] == pytest.approx((0.25, 0.25, 0.25))  # no spread: zero-width CI
    assert est["one"] == (7.0, 7.0, 7.0)  # one seed: no interval to bootstrap
    assert est["three"][0] == pytest.approx(3.0)  # trimming 25% of 3 drops nothing: the mean
    assert iqm_with_ci(finals, reps=500) == est  # seeded: reproducible


def test_numpy_fallback_matches_rliable_when_it_imports(monkeypatch):
    """rliable.library needs arch; arch 7 fails to import with pandas 3 (deprecate_kwarg)."""
    finals = {"a": np.array([0.1, 0.5, 0.4, 0.9, 0.3, 0.35])}
    monkeypatch.setattr(compare, "_rliable_library", lambda: None)
    fallback = iqm_with_ci(finals, reps=2000)["a"]
    assert fallback[1] < fallback[0] < fallback[2]
    monkeypatch.undo()
    try:
        import rliable.library  # noqa: F401
    except Exception:
        pytest.skip("rliable.library does not import here (arch/pandas versions)")
    real = iqm_with_ci(finals, reps=2000)["a"]
    assert real[0] == fallback[0]
    assert real[1:] == pytest.approx(fallback[1:], abs=0.06)


# ------------------------------------------------------------------ end to end


def test_compare_writes_plots_and_tables_with_hand_computed_numbers(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    # 20 rows per run: the last 10% is the last 2 rows.
    tails = {("rtrl", 0): (1.0, 3.0), ("rtrl", 1): (2.0, 2.0), ("rtrl", 2): (4.0, 6.0),
             ("bptt", 0): (0.0, 1.0), ("bptt", 1): (0.5, 0.5)}
    for (grad, seed), tail in tails.items():
        values = [0.0] * 18 + list(tail)
        write_run(sweep / f"{grad}_{seed}", base_config(**{"grad.name": grad, "seed": seed}),
                  values)
    out = run_main(capsys, sweep, *REPS).out
    assert "| grad=rtrl | 3 |" in out and "| grad=bptt | 2 |" in out
    for name in ("learning_curves.png", "final_performance.png"):
        assert (sweep / name).read_bytes()[:8] == PNG_MAGIC  # default out: the common parent
    table = pd.read_csv(sweep / "results.csv").set_index("group")
    rtrl, bptt = table.loc["grad=rtrl"], table.loc["grad=bptt"]
    assert rtrl.n_seeds == 3 and bptt.n_seeds == 2
    assert rtrl.final_mean == pytest.approx((2.0 + 2.0 + 5.0) / 3)  # finals 2, 2, 5
    assert rtrl.final_std == pytest.approx(math.sqrt(3.0))  # sample std of 2, 2, 5
    assert rtrl.iqm == pytest.approx(3.0)  # 3 values: nothing trimmed
    assert bptt.final_mean == pytest.approx(0.5) and bptt.final_std == 0
    assert bptt.iqm == bptt.iqm_ci_low == bptt.iqm_ci_high == pytest.approx(0.5)
    assert rtrl.iqm_ci_low >= 2.0 and rtrl.iqm_ci_high <= 5.0
    assert rtrl.frames_min == rtrl.frames_max == 2000
    assert table["grad.name"].tolist() == ["bptt", "rtrl"]
    md = (sweep / "results.md").read_text()
    assert "| grad=bptt | 2 | 0.5 ± 0 | 0.5 [0.5, 0.5] | 2,000 |" in md


def test_group_by_option_pools_and_prefix_keys(tmp_path, capsys):
    for u in (5, 10):
        for d in (3, 6):
            write_run(tmp_path / "s" / f"{u}_{d}", base_config(
                **{"runner.unroll": u, "env.delay": d}), [float(u + d)])
    out_dir = tmp_path / "out"
    run_main(capsys, tmp_path / "s", "--group-by", "runner.unroll", "--out", out_dir, *REPS)
    table = pd.read_csv(out_dir / "results.csv")
    assert table.group.tolist() == ["runner.unroll=5", "runner.unroll=10"]
    assert table.final_mean.tolist() == [9.5, 14.5]
    run_main(capsys, tmp_path / "s", "--group-by", "env", "--out", out_dir, *REPS)
    assert pd.read_csv(out_dir / "results.csv").group.tolist() == ["env.delay=3", "env.delay=6"]


def test_single_run_and_custom_metric(tmp_path, capsys):
    run = write_run(tmp_path / "r", base_config(), [1.0, 2.0, 3.0], metric="score")
    out = run_main(capsys, run, "--metric", "score", "--out", tmp_path / "o", *REPS).out
    assert "| all runs | 1 | 3 | 3 [3, 3] | 300 |" in out


def test_mixed_envs_warn_in_auto_mode_and_fail_when_pooled(tmp_path, capsys):
    write_run(tmp_path / "s" / "a", base_config(), [1.0])
    atari = base_config(env={"family": "atari", "game": "pong"}, **{"grad.name": "bptt"})
    write_run(tmp_path / "s" / "b", atari, [2.0])
    captured = run_main(capsys, tmp_path / "s", "--out", tmp_path / "o", *REPS)
    assert "warning: comparing runs of 2 envs (atari/pong, delayed_recall)" in captured.err
    err = expect_error(capsys, tmp_path / "s", "--group-by", "grad.name", *REPS)
    assert "different envs" in err and "env.family" in err
    run_main(capsys, tmp_path / "s", "--group-by", "grad.name,env", "--out", tmp_path / "o",
             *REPS)


def test_errors_are_one_line(tmp_path, capsys):
    assert "path does not exist" in expect_error(capsys, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no run dirs" in expect_error(capsys, tmp_path / "empty")

    write_run(tmp_path / "nometric", base_config(), [1.0], metric="other")
    err = expect_error(capsys, tmp_path / "nometric")
    assert "no column 'return_mean'" in err and "other" in err

    bare = write_run(tmp_path / "blank", base_config(), [1.0])
    (bare / "metrics.csv").write_text("")
    assert "metrics.csv is empty" in expect_error(capsys, bare)

    header_only = write_run(tmp_path / "header", base_config(), [])
    assert "no logged values of 'return_mean'" in expect_error(capsys, header_only)

    nan_only = write_run(tmp_path / "nan", base_config(), ["", "nan"])
    assert "no logged values" in expect_error(capsys, nan_only)

    ok = write_run(tmp_path / "ok", base_config(), [1.0])
    assert "--group-by key 'grad.nam'" in expect_error(capsys, ok, "--group-by", "grad.nam")
    assert "--last-frac" in expect_error(capsys, ok, "--last-frac", "0")


def test_dir_with_config_but_no_metrics_is_skipped_with_a_warning(tmp_path, capsys):
    write_run(tmp_path / "s" / "ok", base_config(), [1.0])
    crashed = tmp_path / "s" / "crashed"
    crashed.mkdir()
    (crashed / "config.yaml").write_text(yaml.safe_dump(base_config()))
    (crashed / "git_rev.txt").write_text("abc\n")
    captured = run_main(capsys, tmp_path / "s", "--out", tmp_path / "o", *REPS)
    assert "skipping" in captured.err and "crashed" in captured.err
    assert "| all runs | 1 |" in captured.out


# ------------------------------------------------------------------ learning-curve band


def _curve_run(name: str, seed: int, frames: list[float], values: list[float]) -> Run:
    return Run(path=Path(name), config={"seed": seed}, frames=np.array(frames, dtype=float),
               values=np.array(values, dtype=float))


def _piecewise(f: float, frames: list[float], values: list[float]) -> float:
    """Linear interpolation written out, for one frame inside ``frames``."""
    for i in range(len(frames) - 1):
        (f0, f1), (v0, v1) = frames[i:i + 2], values[i:i + 2]
        if f0 <= f <= f1:
            return v0 + (v1 - v0) * (f - f0) / (f1 - f0)
    raise AssertionError(f"{f} outside {frames}")


CURVES = [([0.0, 100.0], [0.0, 1.0]), ([0.0, 50.0, 100.0], [2.0, 2.0, 0.0]),
          ([10.0, 40.0, 100.0], [3.0, 3.0, 6.0])]


def test_curve_mean_and_band_by_hand():
    """Three runs: the mean of the hand-interpolated curves on [10, 100] (the range all
    cover). With three runs, resampling one run three times has probability 1/27 > 2.5%,
    so the 95% percentile band of the bootstrap mean is exactly [min, max] of the runs."""
    runs = [_curve_run(f"r{i}", i, f, v) for i, (f, v) in enumerate(CURVES)]
    grid, mean, low, high = compare.curve_with_band(runs, reps=20000)
    assert grid[0] == 10.0 and grid[-1] == 100.0 and len(grid) == compare.CURVE_POINTS
    per_run = np.array([[_piecewise(g, f, v) for g in grid] for f, v in CURVES])
    np.testing.assert_allclose(mean, per_run.sum(0) / 3, rtol=0, atol=1e-12)
    assert mean[0] == pytest.approx((0.1 + 2.0 + 3.0) / 3)
    assert mean[-1] == pytest.approx((1.0 + 0.0 + 6.0) / 3)
    np.testing.assert_allclose(low, per_run.min(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(high, per_run.max(0), rtol=0, atol=1e-12)


def test_curve_band_of_identical_runs_has_zero_width():
    f, v = CURVES[2]
    runs = [_curve_run(f"r{i}", i, f, v) for i in range(4)]
    grid, mean, low, high = compare.curve_with_band(runs, reps=5000)
    expected = np.array([_piecewise(g, f, v) for g in grid])
    np.testing.assert_allclose(mean, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(low, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(high, expected, rtol=0, atol=1e-12)


def test_curve_band_of_many_runs_holds_the_mean_inside_the_runs_range():
    gen = np.random.default_rng(0)
    frames = [0.0, 50.0, 100.0]
    runs = [_curve_run(f"r{i}", i, frames, list(gen.normal(size=3))) for i in range(8)]
    _, mean, low, high = compare.curve_with_band(runs, reps=5000)
    per_run = np.stack([np.interp(np.linspace(0, 100, compare.CURVE_POINTS), r.frames,
                                  r.values) for r in runs])
    np.testing.assert_allclose(mean, per_run.mean(0), rtol=0, atol=1e-12)
    assert (per_run.min(0) <= low).all() and (low < mean).all()
    assert (mean < high).all() and (high <= per_run.max(0)).all()


def test_group_finals_by_hand():
    """finals: the mean of each run's last 20% of values, runs ordered by seed."""
    runs = [_curve_run("b", 2, list(range(10)), [0.0] * 8 + [4.0, 6.0]),
            _curve_run("a", 0, list(range(10)), list(range(10))),
            _curve_run("c", 1, list(range(5)), [9.0, 9.0, 9.0, 9.0, -1.0])]
    (group,) = group_runs(runs, [], last_frac=0.2)
    assert group.label == "all runs" and [r.path.name for r in group.runs] == ["a", "c", "b"]
    np.testing.assert_allclose(group.finals, [8.5, -1.0, 5.0])
