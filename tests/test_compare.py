"""``conceptlearn compare``: the smoke preset end to end, resume after a kill at a random moment,
one-line errors for bad arguments, the plan of each preset, content-addressed cell files and the
numbers of the summary."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conceptlearn.cli import main
from conceptlearn.datasets.shifts import SEVERITIES
from conceptlearn.experiments import compare
from conceptlearn.experiments.report import summarise
from conceptlearn.model.library import load_library, save_library
from conceptlearn.shipped import default_checkpoint_path, default_library_path

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = [
    f"{name}.{ext}" for name in ("sample_efficiency", "shifts", "anytime") for ext in ("png", "svg")
]


def _argv(out: Path, root: Path, *models: str) -> list[str]:
    return [
        "compare",
        "--out",
        str(out),
        "--preset",
        "smoke",
        "--models",
        *models,
        "--workers",
        "1",
        "--no-progress",
        "--data",
        str(root),
    ]


def _strip(obj):
    """``results.json`` without what may differ between equal runs: timings and the command
    (which names the output folder)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if "seconds" not in k and k != "command"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, omniglot_root):
    """The smoke preset with bpl and MHD, run once: ``(folder, wall seconds)``."""
    out = tmp_path_factory.mktemp("smoke")
    start = time.perf_counter()
    assert main(_argv(out, omniglot_root, "bpl", "mhd")) == 0
    return out, time.perf_counter() - start


def test_smoke_writes_every_output(smoke):
    out, seconds = smoke
    results = _results(out)
    assert results["complete"] and results["preset"] == "smoke"
    cells = {
        (c["experiment"], c["contender"], c["point"], c["k"], c["shift"]) for c in results["cells"]
    }
    assert cells == {
        ("sample_efficiency", "bpl", "default", 1, None),
        ("sample_efficiency", "bpl", "default", 2, None),
        ("sample_efficiency", "mhd", "default", 1, None),
        ("sample_efficiency", "mhd", "default", 2, None),
        ("shift", "bpl", "default", 1, "clutter=20"),
        ("shift", "mhd", "default", 1, "clutter=20"),
        ("anytime", "bpl", "cheap", 1, None),
        ("anytime", "bpl", "base", 1, None),
        ("anytime", "mhd", "default", 1, None),
    }
    for cell in results["cells"]:
        assert cell["complete"] and len(cell["runs"]) == 2 and cell["config"] is not None
        for run in cell["runs"]:
            assert len(run["predictions"]) == run["n_test"] == len(run["labels"])
            assert run["seconds"] > 0
    bpl = next(c for c in results["cells"] if c["contender"] == "bpl")
    assert bpl["config"]["library"] == str(default_library_path())  # the shipped library
    anytime = {c["point"]: c for c in results["cells"] if c["experiment"] == "anytime"}
    assert (
        anytime["cheap"]["effort"]["proposals_x_refit_steps"]
        < anytime["base"]["effort"]["proposals_x_refit_steps"]
    )
    summary = results["summary"]
    assert set(summary["sample_efficiency"]) == {"bpl", "mhd"}
    assert summary["shifts"]["bpl"]["clutter=20"]["drop_pct"] == pytest.approx(
        summary["shifts"]["bpl"]["clutter=20"]["error_pct"]
        - summary["sample_efficiency"]["bpl"]["error_pct"]["1"]
    )
    text = (out / "summary.md").read_text()
    for needle in (
        "## Sample efficiency",
        "## Out of distribution",
        "## Anytime",
        "conceptlearn compare --out",
        "cpu (",
        "jax ",
    ):
        assert needle in text
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 10_000, name
    assert (out / "shifts.svg").read_text().lstrip().startswith("<?xml")
    print(f"smoke preset (bpl, mhd): {seconds:.0f} s")


def _kill_and_resume(
    out: Path, root: Path, models: list[str], reference: Path, budget: float, workers: int = 1
):
    """Start the command in a subprocess, kill it (and its workers) at a random moment, rerun
    it to the end, and compare with ``reference``."""
    argv = [sys.executable, "-m", "conceptlearn.cli", *_argv(out, root, *models)]
    argv[argv.index("--workers") + 1] = str(workers)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    delay = random.uniform(1.0, budget)
    proc = subprocess.Popen(
        argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _strip(_results(out)) == _strip(_results(reference)), f"killed after {delay:.1f} s"


def test_resume_after_a_kill_at_a_random_moment(tmp_path, omniglot_root):
    """MHD alone (cheap), in two worker processes: killed at a random moment and rerun, the
    same results.json as one uninterrupted process."""
    reference = tmp_path / "reference"
    start = time.perf_counter()
    assert main(_argv(reference, omniglot_root, "mhd")) == 0
    budget = 8.0 + time.perf_counter() - start  # + the subprocesses' start-up
    _kill_and_resume(tmp_path / "killed", omniglot_root, ["mhd"], reference, budget, workers=2)


@pytest.mark.slow
def test_resume_with_bpl_after_a_kill_at_a_random_moment(smoke, tmp_path, omniglot_root):
    reference, seconds = smoke
    _kill_and_resume(tmp_path / "killed", omniglot_root, ["bpl", "mhd"], reference, seconds + 5)


def _exit(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--models", "nope"], "--models"),
        (["--models", "vit", "--checkpoint", "EMPTY"], "--checkpoint"),
        (["--limit", "0"], "--limit"),
        (["--workers", "two"], "--workers"),
        (["--preset", "huge"], "--preset"),
        (["--ks", "0"], "--ks"),
        (["--ks", "1", "20"], "--ks"),
        (["--data", "/nonexistent/omniglot"], "--data"),
        (["--runs", "/nonexistent/runs"], "--runs"),
        (["--runs", "EMPTY"], "--runs"),
        (["--shifts", "spin"], "--shifts"),
        (["--shifts", "rotate=abc"], "--shifts"),
        (["--library", "/nonexistent.npz"], "--library"),
        (["--bpl-set", "no_such_knob=1"], "--bpl-set"),
        (["--bpl-set", "novalue"], "--bpl-set"),
        (["--workers", "2", "--ray"], "--ray"),
    ],
)
def test_bad_arguments_are_one_line_errors(extra, named, tmp_path, omniglot_root, capsys):
    (tmp_path / "empty").mkdir()
    extra = [str(tmp_path / "empty") if x == "EMPTY" else x for x in extra]
    argv = ["compare", "--out", str(tmp_path / "out"), "--data", str(omniglot_root), *extra]
    code, err = _exit(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert named in lines[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_ray_missing_is_a_one_line_error(tmp_path, omniglot_root, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    argv = ["compare", "--out", str(tmp_path / "out"), "--data", str(omniglot_root), "--ray"]
    code, err = _exit(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "--ray" in lines[0] and 'pip install -e ".[ray]"' in lines[0]
    assert not (tmp_path / "out").exists()


def _on_ray(argv: list[str]) -> None:
    """Run ``conceptlearn compare ARGV --ray`` in a fresh interpreter that starts (and stops) a
    local Ray instance: Ray (its processes, threads and native libraries) stays out of the test
    process."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (the [ray] extra)")
    argv = list(argv)
    argv[argv.index("--workers") : argv.index("--workers") + 2] = []  # --ray instead
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DASHBOARD": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "conceptlearn.cli", *argv, "--ray"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_ray_cells_match_a_local_run_and_resume(tmp_path, omniglot_root):
    """``--ray``: MHD's smoke cells (one run) as Ray tasks give the local run's results.json
    (timings apart); a rerun computes only the cell that was removed."""
    start = time.perf_counter()
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main([*_argv(local, omniglot_root, "mhd"), "--limit", "1"]) == 0
    ray_argv = [*_argv(on_ray, omniglot_root, "mhd"), "--limit", "1"]
    _on_ray(ray_argv)
    assert _strip(_results(on_ray)) == _strip(_results(local))
    assert _results(on_ray)["command"].endswith("--ray")
    cells = sorted((on_ray / "cells").iterdir())
    assert [c.name for c in cells] == sorted(c.name for c in (local / "cells").iterdir())

    removed, kept = cells[0], cells[1:]
    kept_times = [c.stat().st_mtime_ns for c in kept]
    removed.unlink()
    _on_ray(ray_argv)
    assert removed.exists() and [c.stat().st_mtime_ns for c in kept] == kept_times
    assert _strip(_results(on_ray)) == _strip(_results(local))
    print(f"ray: local + ray + resumed runs in {time.perf_counter() - start:.0f} s")


@pytest.mark.slow
def test_ray_cells_with_bpl_match_the_smoke_run(smoke, tmp_path, omniglot_root):
    """bpl's cells on Ray (in parallel, sharing a fresh parse cache) give the local smoke run's
    results.json."""
    reference, _ = smoke
    _on_ray(_argv(tmp_path / "ray", omniglot_root, "bpl", "mhd"))
    assert _strip(_results(tmp_path / "ray")) == _strip(_results(reference))


def test_default_models_use_the_shipped_checkpoint(tmp_path, omniglot_root):
    plan = compare.make_plan(out=tmp_path, preset="smoke", data=omniglot_root)
    assert plan.models == compare.DEFAULT_MODELS
    vit_jobs = [j for j in plan.jobs if j.model == "vit"]
    assert vit_jobs and all(
        dict(j.options)["checkpoint"] == str(default_checkpoint_path()) for j in vit_jobs
    )


@pytest.mark.parametrize("preset", ["standard", "full"])
def test_presets_plan_every_experiment(preset, tmp_path, omniglot_root):
    plan = compare.make_plan(out=tmp_path, preset=preset, models=["bpl", "mhd"], data=omniglot_root)
    by = {
        e: [j for j in plan.jobs if j.experiment == e]
        for e in ("sample_efficiency", "shift", "anytime")
    }
    n_runs = compare.STANDARD_RUNS if preset == "standard" else 40
    assert len(plan.runs) == n_runs and plan.ks == (1, 2, 3, 5, 10)
    assert {j.ks for j in by["sample_efficiency"]} == {(1, 2, 3, 5, 10)}
    n_shifts = sum(len(s) for s in SEVERITIES.values())
    assert len(by["shift"]) == 2 * n_shifts
    assert {j.shift.split("=")[0] for j in by["shift"]} == set(SEVERITIES)
    shift_runs = compare.STANDARD_SHIFT_RUNS if preset == "standard" else 40
    assert {j.n_runs for j in by["shift"]} == {shift_runs}
    bpl_points = [j.point for j in by["anytime"] if j.model == "bpl"]
    assert len(bpl_points) >= 4 and bpl_points[-1] == "full"
    full = next(j for j in by["anytime"] if j.point == "full")
    assert (
        compare.contender_for("bpl", full.options).config
        == compare.contender_for("bpl", by["sample_efficiency"][0].options).config
    )  # the ladder ends at the preset


def test_a_configs_jobs_come_together_and_a_new_config_releases_the_old(
    tmp_path, omniglot_root, monkeypatch
):
    """Each (model, options) config's jobs are contiguous in the plan, so a process releases a
    config's contenders and compiled programs once, when the next config starts."""
    plan = compare.make_plan(
        out=tmp_path, preset="standard", models=["bpl", "mhd"], data=omniglot_root
    )
    configs = [(j.model, j.options) for j in plan.jobs]
    starts = [c for i, c in enumerate(configs) if i == 0 or configs[i - 1] != c]
    assert len(starts) == len(set(configs))  # no config comes back after another
    released = []
    monkeypatch.setattr(compare, "release_contenders", lambda: released.append(True))
    monkeypatch.setattr(compare, "_CURRENT_CONFIG", [])
    for model, options in configs:
        compare.use_config(model, options)
    assert len(released) == len(set(configs)) - 1


def test_release_contenders_forgets_compiled_programs():
    import jax
    import jax.numpy as jnp

    from conceptlearn import evaluate

    square = jax.jit(lambda x: x * x)
    square(jnp.ones(3))
    assert square._cache_size() == 1
    evaluate._WORKER[b"setup"] = (None, None)
    evaluate.release_contenders()
    assert square._cache_size() == 0 and not evaluate._WORKER


def test_cell_files_change_with_the_config_and_the_library(tmp_path, omniglot_root):
    library = tmp_path / "lib.npz"
    shutil.copy(default_library_path(), library)

    def files(**kw):
        plan = compare.make_plan(
            out=tmp_path,
            preset="smoke",
            models=["bpl"],
            data=omniglot_root,
            library=str(library),
            **kw,
        )
        return [compare.job_target(tmp_path, plan, j) for j in plan.jobs]

    first = files()
    assert files() == first  # same config, same files: a rerun resumes them
    assert len(set(first)) == len(first)
    assert set(files(bpl_overrides={"epsilon": 0.03})).isdisjoint(first)
    assert set(files(seed=1)).isdisjoint(first)
    changed = load_library(library)._replace(position_sd=np.float32(9.5))
    save_library(changed, library)  # same path, other contents
    compare._file_digest.cache_clear()
    compare.contender_for.cache_clear()
    assert set(files()).isdisjoint(first)
    library.write_bytes(b"not a library")
    compare.contender_for.cache_clear()
    with pytest.raises(compare.BadArgument, match="--library"):
        files()  # a corrupt library is named before any work


def _cell(experiment, model, k, errors, shift=None):
    runs = [
        {"run": f"run{i:02d}", "n_test": 20, "n_errors": e, "seconds": 1.0}
        for i, e in enumerate(errors)
    ]
    total = 100.0 * sum(errors) / (20 * len(errors))
    family, _, severity = (shift or "").partition("=")
    return {
        "experiment": experiment,
        "contender": model,
        "point": "default",
        "k": k,
        "shift": shift,
        "family": family or None,
        "severity": float(severity) if severity else None,
        "mean_error_pct": total,
        "ci95_pct": [total - 1, total + 1],
        "runs": runs,
    }


def test_summary_numbers():
    cells = [
        _cell("sample_efficiency", "bpl", 1, [2, 4]),  # 15%
        _cell("sample_efficiency", "bpl", 2, [1, 1]),  # 5%
        _cell("sample_efficiency", "vit", 1, [8, 8]),  # 40%
        _cell("sample_efficiency", "vit", 2, [5, 5]),  # 25%
        _cell("sample_efficiency", "vit", 5, [3, 2]),  # 12.5%
        _cell("shift", "bpl", 1, [4, 6], "rotate=30"),  # 25%: drop 10
        _cell("shift", "vit", 1, [12, 12], "rotate=30"),  # 60%: drop 20
    ]
    s = summarise({"cells": cells})
    assert s["transformer"] == "vit"
    assert s["sample_efficiency"]["bpl"]["k_for_80pct_accuracy"] == 1
    assert s["sample_efficiency"]["bpl"]["k_for_90pct_accuracy"] == 2
    assert s["sample_efficiency"]["vit"]["k_for_80pct_accuracy"] == 5
    assert s["sample_efficiency"]["vit"]["k_for_90pct_accuracy"] is None
    assert s["k_to_match_bpl_k1"]["vit"]["k"] == 5
    rotate = s["shifts"]["bpl"]["rotate=30"]
    assert rotate["drop_pct"] == pytest.approx(10.0)
    assert rotate["drop_ratio_vs_transformer"] == pytest.approx(0.5)
    assert rotate["drop_ci95_pct"][0] <= 10.0 <= rotate["drop_ci95_pct"][1]


def test_vit_contenders_with_a_tiny_checkpoint(tmp_path, small1_images, omniglot_root):
    """With a checkpoint the transformer is in every table: ratios against it, its fine-tuning
    curve in the anytime figure."""
    from conceptlearn.baselines import vit
    from conceptlearn.baselines.vit import pretraining as vt

    chars = small1_images.character_array(small1_images.all_characters()[:12])[0]
    tcfg = vt.TrainConfig(steps=20, batch=32, ckpt_every=10, lr=3e-3, loss="proto", ways=8)
    vt.pretrain(tmp_path / "ckpt", cfg=vit.PRESETS["tiny"], tcfg=tcfg, data=chars, progress=False)
    out = tmp_path / "out"
    argv = [
        *_argv(out, omniglot_root, "vit", "vit-proto", "mhd"),
        "--limit",
        "1",
        "--checkpoint",
        str(tmp_path / "ckpt"),
    ]
    assert main(argv) == 0
    results = _results(out)
    assert results["summary"]["transformer"] == "vit"
    assert "drop_ratio_vs_transformer" in results["summary"]["shifts"]["mhd"]["clutter=20"]
    steps = sorted(
        c["effort"]["finetune_steps"]
        for c in results["cells"]
        if c["experiment"] == "anytime" and c["contender"] == "vit"
    )
    assert steps == sorted(compare.PRESETS["smoke"].vit_steps)
    assert "| vit |" in (out / "summary.md").read_text()
    for name in OUTPUTS:
        assert (out / name).exists()
