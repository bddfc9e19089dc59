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
        np.testing.assert_allclose(
            np.asarray(getattr(fresh, name)),
            np.asarray(getattr(shipped, name)),
            rtol=1e-4,
            atol=1e-5,
            err_msg=name,
        )


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
