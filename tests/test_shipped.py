"""The library and ViT checkpoint shipped as package data: they load, pass their checks, record
where they came from, the contenders use them by default, and ``conceptlearn learn`` reproduces
the library."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from conceptlearn.baselines.vit.checkpoint import load_checkpoint
from conceptlearn.cli import main
from conceptlearn.contenders import make_contender
from conceptlearn.datasets.download import FILES
from conceptlearn.model.learn import LearnConfig
from conceptlearn.model.library import Library, check_library, load_library
from conceptlearn.shipped import (
    STANDIN,
    checkpoint_record,
    default_checkpoint_path,
    default_library_path,
    library_record,
    sha256_file,
)


def test_shipped_library_loads_and_records_config_and_data_hash():
    path = default_library_path()
    library = load_library(path)  # pickle-free load, checked
    check_library(library, str(path))
    assert library.n_primitives > 1
    record = library_record()
    assert record["background"] == "small1"
    assert record["learn_config"] == json.loads(json.dumps(dataclasses.asdict(LearnConfig())))
    assert record["source"]["file"] == "strokes_background_small1.zip"
    assert record["source"]["sha256"] == FILES["strokes_background_small1"].digests["sha256"]
    assert record["library_sha256"] == sha256_file(path)  # the record describes this very file
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(Library._fields)


def test_bpl_uses_the_shipped_library_unless_told_otherwise():
    default = make_contender("bpl")
    assert default.config["library"] == str(default_library_path())
    assert default._library is not None
    standin = make_contender("bpl", library=STANDIN)
    assert standin.config["library"] is None and standin._library is None


@pytest.mark.data
def test_learn_reproduces_the_shipped_library(omniglot_root, tmp_path):
    assert (
        sha256_file(omniglot_root / library_record()["source"]["file"])
        == (library_record()["source"]["sha256"])
    )
    out = tmp_path / "small1.npz"
    argv = ["learn", "--background", "small1", "--data", str(omniglot_root), "--out", str(out)]
    assert main(argv) == 0
    fresh, shipped = load_library(out), load_library(default_library_path())
    for name in Library._fields:
        assert np.shape(getattr(fresh, name)) == np.shape(getattr(shipped, name)), name
        if name not in PRIMITIVE_FIELDS:
            np.testing.assert_allclose(np.asarray(getattr(fresh, name)),
                                       np.asarray(getattr(shipped, name)),
                                       rtol=1e-2, atol=2e-3, err_msg=name)
    # The primitives come from k-means: another machine's float rounding (1e-4 in the spline
    # fits upstream) moves a few sub-strokes across cluster boundaries and the clusters drift
    # apart one by one. Compared as mixtures, they agree.
    (f_shape, f_scale, f_scale_sd, f_shape_sd), (s_shape, s_scale, s_scale_sd, s_shape_sd) = (
        _mixture_summary(lib) for lib in (fresh, shipped))
    np.testing.assert_allclose(f_shape, s_shape, atol=0.02)
    np.testing.assert_allclose(f_scale, s_scale, atol=0.03)
    np.testing.assert_allclose([f_scale_sd, f_shape_sd], [s_scale_sd, s_shape_sd], rtol=0.03)
    a, b = (np.asarray(lib.shape_mean, float).reshape(lib.n_primitives, -1) for lib in (fresh, shipped))
    nearest = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    assert np.median(nearest.min(1)) < 0.5 and np.median(nearest.min(0)) < 0.5


PRIMITIVE_FIELDS = ("shape_mean", "shape_sd", "log_scale_mean", "log_scale_sd", "start_probs",
                    "trans_probs")


def _mixture_summary(library):
    """The primitive mixture's mean shape ``(5, 2)``, mean log scale, mean log-scale sd and mean
    shape sd, each weighted by the primitives' start probabilities."""
    w = np.asarray(library.start_probs, float)
    return (np.einsum("k,kij->ij", w, np.asarray(library.shape_mean, float)),
            float(w @ np.asarray(library.log_scale_mean, float)),
            float(w @ np.asarray(library.log_scale_sd, float)),
            float(w @ np.asarray(library.shape_sd, float).mean((1, 2))))


def test_shipped_vit_checkpoint_loads_records_its_source_and_is_the_default():
    path = default_checkpoint_path()
    cfg, _, params, config = load_checkpoint(path)  # pickle-free, checked against its config
    assert config["background"] == "small1" and config["step"] == config["train"]["steps"]
    record = checkpoint_record()
    assert record["source"]["file"] == "images_background_small1.zip"
    assert record["source"]["sha256"] == FILES["images_background_small1"].digests["sha256"]
    assert record["params_sha256"] == sha256_file(path / "params.npz")
    assert sum(np.asarray(x).size for x in jax.tree.leaves(params)) > 100_000
    for model in ("vit", "vit-proto"):
        contender = make_contender(model)
        assert contender.config["checkpoint"] == str(path)
        assert contender.config["vit"] == json.loads(json.dumps(dataclasses.asdict(cfg)))
