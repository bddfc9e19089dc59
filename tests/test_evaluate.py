"""The harness: results fields, resume after interruption, bootstrap interval."""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest

from conceptlearn.datasets.episodes import generate_run_set, run_set_runs
from conceptlearn.evaluate import bootstrap_ci, evaluate_contender

TIMING_FIELDS = {"seconds", "seconds_total"}


class OverlapContender:
    """Pixel overlap with the class mean, plus key-dependent noise (to check key handling)."""

    name = "overlap"
    config = {"noise": 0.5}

    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.calls = fail_at, 0

    def fit(self, support, *, key):
        return support.mean(axis=1), key

    def scores(self, state, queries, *, key):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt
        means, fit_key = state
        overlap = np.einsum("qhw,chw->qc", queries.astype(np.float32), means)
        noise = jax.random.normal(jax.random.fold_in(key, 1), overlap.shape) + jax.random.normal(
            fit_key, overlap.shape
        )
        return overlap + self.config["noise"] * np.asarray(noise)


@pytest.fixture(scope="module")
def tiny_runs(small1_images):
    run_set = generate_run_set(
        small1_images, small1_images.alphabets, n_runs=5, n_way=4, max_k=2, seed=0
    )
    return run_set_runs(run_set, 2)


def _strip_timings(obj):
    if isinstance(obj, dict):
        return {k: _strip_timings(v) for k, v in obj.items() if k not in TIMING_FIELDS}
    if isinstance(obj, list):
        return [_strip_timings(v) for v in obj]
    return obj


def test_results_fields(tiny_runs, small1_images, tmp_path):
    out = tmp_path / "r.json"
    results = evaluate_contender(OverlapContender(), tiny_runs, small1_images, out, progress=False)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(results))
    for field in (
        "model",
        "config",
        "runs",
        "mean_error_pct",
        "ci95_pct",
        "seconds_total",
        "device",
        "versions",
    ):
        assert field in on_disk
    assert [r["run"] for r in on_disk["runs"]] == [r.name for r in tiny_runs]
    for r in on_disk["runs"]:
        assert set(r) >= {"run", "n_test", "n_errors", "error_pct", "seconds"}
        assert r["error_pct"] == pytest.approx(100 * r["n_errors"] / r["n_test"])
        margins = np.asarray(r["margins"])
        right = np.asarray(r["predictions"]) == np.asarray(r["labels"])
        assert np.all(margins[right] == 0.0) and np.all(margins[~right] >= 0.0)
    lo, hi = on_disk["ci95_pct"]
    assert lo <= on_disk["mean_error_pct"] <= hi


def test_resume_after_interruption_matches_uninterrupted(tiny_runs, small1_images, tmp_path):
    whole = evaluate_contender(
        OverlapContender(), tiny_runs, small1_images, tmp_path / "a.json", progress=False
    )
    with pytest.raises(KeyboardInterrupt):
        evaluate_contender(
            OverlapContender(fail_at=3),
            tiny_runs,
            small1_images,
            tmp_path / "b.json",
            progress=False,
        )
    partial = json.loads((tmp_path / "b.json").read_text())
    assert [r["run"] for r in partial["runs"]] == ["run01", "run02"]
    resumed_contender = OverlapContender()
    resumed = evaluate_contender(
        resumed_contender, tiny_runs, small1_images, tmp_path / "b.json", progress=False
    )
    assert resumed_contender.calls == 3  # only the unfinished runs ran again
    assert _strip_timings(resumed) == _strip_timings(whole)
    assert _strip_timings(json.loads((tmp_path / "b.json").read_text())) == _strip_timings(whole)


def test_resume_refuses_a_different_evaluation(tiny_runs, small1_images, tmp_path):
    out = tmp_path / "r.json"
    evaluate_contender(OverlapContender(), tiny_runs[:2], small1_images, out, progress=False)
    other = OverlapContender()
    other.config = {"noise": 0.1}
    with pytest.raises(ValueError, match="config"):
        evaluate_contender(other, tiny_runs[:2], small1_images, out, progress=False)
    with pytest.raises(ValueError, match="run_set_digest"):
        evaluate_contender(OverlapContender(), tiny_runs, small1_images, out, progress=False)


def test_bootstrap_interval():
    n_test = [20] * 40
    assert bootstrap_ci([0] * 40, n_test) == [0.0, 0.0]
    lo, hi = bootstrap_ci([5] * 20 + [0] * 20, n_test)
    assert lo < 12.5 < hi
    assert bootstrap_ci([5] * 20 + [0] * 20, n_test, seed=1) == bootstrap_ci(
        [5] * 20 + [0] * 20, n_test, seed=1
    )
    # Wider spread across runs gives a wider interval.
    lo2, hi2 = bootstrap_ci([10] * 10 + [0] * 30, n_test)
    assert hi2 - lo2 > hi - lo


def _overlap_setup(omniglot_root):
    """Worker setup for the ``workers`` test (module level: spawned processes import it)."""
    from conceptlearn.datasets.omniglot import OmniglotImages

    return OverlapContender(), OmniglotImages("small1", omniglot_root)


def test_workers_give_the_same_results_as_one_process(
    tiny_runs, small1_images, omniglot_root, tmp_path
):
    one = evaluate_contender(
        OverlapContender(), tiny_runs, small1_images, tmp_path / "one.json", progress=False
    )
    two = evaluate_contender(
        OverlapContender(),
        tiny_runs,
        small1_images,
        tmp_path / "two.json",
        progress=False,
        workers=2,
        worker_setup=functools.partial(_overlap_setup, omniglot_root),
    )
    assert _strip_timings(two) == _strip_timings(one)
    with pytest.raises(ValueError, match="worker_setup"):
        evaluate_contender(
            OverlapContender(), tiny_runs, small1_images, tmp_path / "x.json", workers=2
        )


def test_one_pool_serves_many_evaluations(tiny_runs, small1_images, omniglot_root, tmp_path):
    """A pool from make_pool outlives an evaluation: two evaluations (one of them shifted) in
    the same two worker processes give the results of one process."""
    from conceptlearn.evaluate import make_pool

    setup = functools.partial(_overlap_setup, omniglot_root)
    with make_pool(2) as pool:
        pooled = [
            evaluate_contender(
                OverlapContender(),
                tiny_runs,
                small1_images,
                tmp_path / f"p{i}.json",
                shift=shift,
                progress=False,
                pool=pool,
                worker_setup=setup,
            )
            for i, shift in enumerate([None, "thicken=1"])
        ]
    for i, shift in enumerate([None, "thicken=1"]):
        alone = evaluate_contender(
            OverlapContender(),
            tiny_runs,
            small1_images,
            tmp_path / f"a{i}.json",
            shift=shift,
            progress=False,
        )
        assert _strip_timings(pooled[i]) == _strip_timings(alone)


def test_k_sweep_files_equal_separate_evaluations(small1_images, tmp_path):
    """--ks writes, for each k, the file a separate evaluation of the first k shots writes; the
    first k shots of the k_max run set are the k run set (paired drawers)."""
    from conceptlearn.evaluate import first_shots, sweep_outputs, sweep_spec

    run_set = generate_run_set(
        small1_images, small1_images.alphabets, n_runs=3, n_way=4, max_k=3, seed=1
    )
    runs = run_set_runs(run_set, 3)
    for k in (1, 2):
        assert [first_shots(r, k) for r in runs] == run_set_runs(run_set, k)
    sweep = evaluate_contender(
        OverlapContender(), runs, small1_images, tmp_path / "s.json", runs_spec="tiny-k3",
        ks=[2, 1], progress=False,
    )
    assert sorted(sweep) == [1, 2]
    assert sweep_outputs(tmp_path / "s.json", [1]) == {1: tmp_path / "s_k1.json"}
    for k in (1, 2):
        alone = evaluate_contender(
            OverlapContender(), run_set_runs(run_set, k), small1_images, tmp_path / f"a{k}.json",
            runs_spec=sweep_spec("tiny-k3", k), progress=False,
        )
        swept = json.loads((tmp_path / f"s_k{k}.json").read_text())
        assert _strip_timings(swept) == _strip_timings(alone)
    with pytest.raises(ValueError, match="--ks must lie"):
        evaluate_contender(OverlapContender(), runs, small1_images, tmp_path / "x.json", ks=[4])
