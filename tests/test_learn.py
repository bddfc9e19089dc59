"""Learning to learn on a tiny subset; k-means; sampling CLI."""

from __future__ import annotations

import time

import jax
import numpy as np
import pytest

from conceptlearn.cli import main
from conceptlearn.model.learn import (
    Drawing,
    LearnConfig,
    affine_parts,
    collect_drawings,
    drawer_affine_sd,
    drawing_log_probs,
    fit_primitives,
    fit_token_noise,
    kmeans,
    learn_library,
)
from conceptlearn.model.library import MAX_STROKES, load_library, save_library, toy_library


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10.0]])
    truth = rng.integers(0, 3, 300)
    x = centers[truth] + rng.normal(0, 0.5, (300, 2))
    labels = kmeans(x, 3, 20, np.random.default_rng(1))
    # the partition matches up to a relabelling
    assert len({(a, b) for a, b in zip(truth, labels, strict=True)}) == 3


def _drawing(char, controls):
    return Drawing(char, 1, [np.asarray(c, float) for c in controls])


def test_primitive_statistics_from_known_sequences():
    """Two clearly different sub-stroke shapes, always drawn as the pair (a, b): the start
    and transition probabilities must reflect it."""
    a = np.stack([np.linspace(0, 40, 5), np.zeros(5)], 1)  # horizontal line
    b = np.stack([np.zeros(5), np.linspace(0, 40, 5) ** 1.5 / 40**0.5], 1)  # curved vertical
    drawings = [_drawing(("x", f"c{i}"), [np.stack([a + i, b + [40 + i, 0]])]) for i in range(30)]
    prims = fit_primitives(drawings, 2, LearnConfig(start_smoothing=0.01, trans_smoothing=0.01))
    first = int(np.argmax(prims["start_probs"]))
    assert prims["start_probs"][first] > 0.95
    assert prims["trans_probs"][first, 1 - first] > 0.95
    # the line's control points sit 0, 10, 20 px from their mean: scale sqrt(200)
    np.testing.assert_allclose(prims["log_scale_mean"].min(), np.log(np.sqrt(200.0)), rtol=0.02)


def test_token_noise_recovers_injected_jitter():
    rng = np.random.default_rng(0)
    base = [np.linspace([20, 20], [20, 80], 5)[None], np.linspace([40, 20], [80, 60], 5)[None]]
    drawings = []
    for c in range(20):
        for drawer in range(1, 11):
            shift = rng.normal(0, 3.0, 2)
            drawings.append(
                Drawing(
                    ("x", f"c{c}"), drawer, [s + shift + rng.normal(0, 1.0, s.shape) for s in base]
                )
            )
    noise = fit_token_noise(drawings, LearnConfig())
    assert 2.0 < noise["affine_sd"][2] < 4.0 and 2.0 < noise["affine_sd"][3] < 4.0
    assert 0.6 < noise["position_noise_sd"] < 1.4


def test_affine_parts_invert_the_token_affine():
    from conceptlearn.model.token import TrajectoryToken, token_affine

    rng = np.random.default_rng(1)
    for _ in range(20):
        turn, shear, log_scale = rng.uniform(-1.2, 1.2), rng.uniform(-0.6, 0.6), rng.normal(0, 0.3, 2)
        token = TrajectoryToken(log_scale, np.zeros(2), np.zeros((1, 2)), np.zeros((1, 1, 2)),
                                0.0, turn, shear)
        got = affine_parts(np.asarray(token_affine(token), np.float64))
        np.testing.assert_allclose([got[0], got[1], *got[2]], [turn, shear, *log_scale], atol=1e-4)


def test_drawer_affine_sd_recovers_injected_rotation_and_shear():
    rng = np.random.default_rng(0)
    base = [np.linspace([20, 20], [20, 80], 5)[None], np.linspace([40, 30], [85, 60], 5)[None],
            np.linspace([30, 85], [80, 80], 5)[None]]
    drawings = []
    for c in range(30):
        for drawer in range(1, 11):
            turn, shear = rng.normal(0, 0.2), rng.normal(0, 0.1)
            rot = np.asarray([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
            matrix = rot @ np.asarray([[1.0, shear], [0.0, 1.0]])
            moved = [(s - 50.0) @ matrix.T + 50.0 + rng.normal(0, 0.5, s.shape) for s in base]
            drawings.append(Drawing(("x", f"c{c}"), drawer, moved))
    spread = drawer_affine_sd(drawings)
    assert 0.16 < spread["rotation_sd"] < 0.24
    assert 0.07 < spread["shear_sd"] < 0.13
    assert spread["log_scale_sd"] < 0.05
    assert spread["n_drawings"] == 300


@pytest.mark.data
def test_learn_on_a_tiny_subset(small1_strokes, tmp_path):
    start = time.perf_counter()
    drawings, stats = collect_drawings(small1_strokes, max_characters=4)
    assert stats["n_drawings"] + stats["n_skipped_too_large"] == 80
    assert 0 < stats["spline_residual_px"] < 1.0
    library, report = learn_library(drawings, LearnConfig(k_grid=(1, 4, 8)))
    assert [row["k"] for row in report["heldout_curve"]] == [1, 4, 8]
    assert report["n_primitives"] == library.n_primitives > 1
    curve = [row["heldout_log_prob_per_stroke"] for row in report["heldout_curve"]]
    assert curve[0] < max(curve[1:])  # more than one primitive helps on held-out strokes
    assert library.n_strokes_probs.shape == (MAX_STROKES,)
    logp = drawing_log_probs(library, drawings[:5])
    assert logp.shape == (5,) and np.all(np.isfinite(logp))
    assert time.perf_counter() - start < 60


@pytest.mark.data
def test_learn_cli(omniglot_root, tmp_path):
    out = tmp_path / "lib.npz"
    assert (
        main(
            [
                "learn",
                "--background",
                "small1",
                "--data",
                str(omniglot_root),
                "--out",
                str(out),
                "--max-characters",
                "3",
                "--n-primitives",
                "3",
            ]
        )
        == 0
    )
    assert load_library(out).n_primitives == 3


def test_learn_plot_draws_the_heldout_curve(tmp_path):
    """``conceptlearn learn --plot``: the held-out curve of a report; with ``--n-primitives``
    there is no curve, so the flag is refused before any learning."""
    from PIL import Image

    from conceptlearn.experiments.plots import plot_heldout_curve

    curve = [{"k": k, "heldout_log_prob_per_stroke": -10.0 / k} for k in (1, 4, 16)]
    report = {"heldout_curve": curve, "n_primitives": 4, "background": "small1"}
    path = plot_heldout_curve(report, tmp_path / "curve.png")
    assert Image.open(path).size[0] > 100
    argv = ["learn", "--out", str(tmp_path / "lib.npz"), "--n-primitives", "3"]
    with pytest.raises(SystemExit, match="--n-primitives"):
        main([*argv, "--plot", str(tmp_path / "c.png")])
    assert not (tmp_path / "lib.npz").exists()


@pytest.mark.slow
def test_sample_cli(tmp_path):
    out = tmp_path / "lib.npz"
    save_library(toy_library(), out)
    grid = tmp_path / "grid.png"
    assert (
        main(
            [
                "sample",
                "--library",
                str(out),
                "--new-concepts",
                "2",
                "--exemplars",
                "2",
                "--out",
                str(grid),
                "--seed",
                "1",
            ]
        )
        == 0
    )
    from PIL import Image

    image = np.asarray(Image.open(grid))
    assert image.shape == (2 * 108 + 3, 3 * 108 + 3)
    assert image.min() < 128  # some ink was drawn


@pytest.mark.slow
def test_sampling_is_deterministic():
    from conceptlearn.model.sample import sample_images

    library = toy_library()
    a = sample_images(library, jax.random.key(0), 2, 2)
    b = sample_images(library, jax.random.key(0), 2, 2)
    assert a.shape == (2, 3, 105, 105)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _FirstCharacter:
    """A stroke split cut to its first alphabet's first character (same interface)."""

    def __init__(self, split):
        self.split = split
        self.alphabets = split.alphabets[:1]

    def characters(self, alphabet):
        return self.split.characters(alphabet)[:1]

    def keys(self, alphabet, character):
        return self.split.keys(alphabet, character)

    def strokes(self, key):
        return self.split.strokes(key)


@pytest.mark.data
def test_collect_drawings_learns_from_several_splits_together(small1_strokes, omniglot_root):
    """``learn --background small1 small2``: the drawings of both splits, and an alphabet in
    neither is named in the error."""
    from conceptlearn.datasets.omniglot import OmniglotStrokes

    small2 = OmniglotStrokes("small2", omniglot_root)
    splits = [_FirstCharacter(small1_strokes), _FirstCharacter(small2)]
    assert splits[0].alphabets != splits[1].alphabets  # Balinese, Greek
    drawings, stats = collect_drawings(splits)
    alphabets = {d.character[0] for d in drawings}
    assert alphabets == {small1_strokes.alphabets[0], small2.alphabets[0]}
    assert stats["n_characters"] == 2
    assert stats["n_drawings"] + stats["n_skipped_too_large"] == 40
    only, _ = collect_drawings(splits, alphabets=[small2.alphabets[0]])
    assert {d.character[0] for d in only} == {small2.alphabets[0]}
    # Greek and Latin are in both splits: their characters are taken once
    twice, stats = collect_drawings([_FirstCharacter(small2), _FirstCharacter(small2)])
    assert stats["n_characters"] == 1 and len({d.drawer for d in twice}) == len(twice)
    with pytest.raises(ValueError, match="Klingon"):
        collect_drawings(splits, alphabets=["Klingon"])


def test_pretraining_backgrounds_load_together(monkeypatch):
    """``pretrain-vit --background small1 small2``: the characters of both, in order, each once,
    under one name; an unknown set is refused by name."""
    import conceptlearn.datasets.omniglot as omniglot
    from conceptlearn.baselines.vit.pretraining import background_name, load_background

    class FakeImages:  # small2 shares its first character with small1
        def __init__(self, split, root=None):
            self.split = split
            self.chars = {"small1": [("A", "1"), ("G", "1")], "small2": [("G", "1"), ("B", "1"),
                                                                         ("B", "2")]}[split]

        def all_characters(self):
            return self.chars

        def character_array(self, chars):
            return np.full((len(chars), 20, 105, 105), self.split == "small2"), chars

    monkeypatch.setattr(omniglot, "OmniglotImages", FakeImages)
    both = load_background(["small1", "small2"])
    assert both.shape == (4, 20, 105, 105)
    assert not both[:2].any() and both[2:].all()
    assert background_name(["small1", "small2"]) == "small1+small2"
    assert background_name("small1") == "small1"
    with pytest.raises(ValueError, match="small3"):
        load_background(["small1", "small3"])


def test_pretraining_schedule_scales_with_the_background(monkeypatch, tmp_path):
    """``pretrain-vit``'s steps grow with the number of background characters (1,200 for
    small1's 136) unless ``--set steps=N`` fixes them."""
    import conceptlearn.cli.pretrain_vit as cli
    from conceptlearn.baselines.vit.pretraining import scaled_steps
    from conceptlearn.cli import main

    assert scaled_steps(136) == 1200 and scaled_steps(242) == 2135
    seen = []

    def fake_pretrain(out, *, background, cfg, tcfg, data, progress):
        seen.append((background, tcfg.steps, len(data)))
        return {"step": tcfg.steps, "train_seconds": 0.0, "train_loss": None}

    monkeypatch.setattr(cli, "load_background", lambda bg, root: np.zeros((272, 1), bool))
    monkeypatch.setattr(cli, "pretrain", fake_pretrain)
    assert main(["pretrain-vit", "--background", "small1", "small2", "--out", str(tmp_path)]) == 0
    assert main(["pretrain-vit", "--out", str(tmp_path), "--set", "steps=7"]) == 0
    assert seen == [(["small1", "small2"], 2400, 272), ("small1", 7, 272)]
