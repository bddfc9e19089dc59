"""Run sets: deterministic generation, disjoint drawers, paired k variants, official-layout round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conceptlearn.datasets.episodes import (
    DATA_DIR,
    FileImages,
    OmniglotFormatError,
    generate_run_set,
    load_episode,
    load_runs,
    read_run_folder,
    read_run_folders,
    run_set_runs,
    write_run_folders,
)
from conceptlearn.datasets.omniglot import parse_key


def _small_set(images, seed):
    return generate_run_set(images, images.alphabets, n_runs=4, n_way=5, max_k=3, seed=seed)


def test_generation_is_deterministic(small1_images):
    assert _small_set(small1_images, 3) == _small_set(small1_images, 3)
    assert _small_set(small1_images, 3) != _small_set(small1_images, 4)


def test_runs_are_within_alphabet_with_disjoint_drawers(small1_images):
    run_set = _small_set(small1_images, 0)
    for spec in run_set["runs"]:
        keys = [k for shots in spec["support"] for k in shots] + spec["queries"]
        assert {parse_key(k)["alphabet"] for k in keys} == {spec["alphabet"]}
        characters = [parse_key(shots[0])["character"] for shots in spec["support"]]
        assert len(set(characters)) == 5
        for label, query in zip(spec["labels"], spec["queries"], strict=True):
            shots = spec["support"][label]
            assert parse_key(query)["character"] == parse_key(shots[0])["character"]
            drawers = [parse_key(k)["drawer"] for k in [query, *shots]]
            assert len(set(drawers)) == len(drawers)


def test_k_variants_are_paired(small1_images):
    run_set = _small_set(small1_images, 1)
    k1, k3 = run_set_runs(run_set, 1), run_set_runs(run_set, 3)
    for a, b in zip(k1, k3, strict=True):
        assert a.queries == b.queries and a.labels == b.labels
        assert all(sa == sb[:1] for sa, sb in zip(a.support, b.support, strict=True))
    with pytest.raises(ValueError, match="k=4"):
        run_set_runs(run_set, 4)


def test_committed_dev_set():
    run_set = json.loads((DATA_DIR / "dev_runs.json").read_text())
    runs = run_set["runs"]
    assert len(runs) == 40 and run_set["n_way"] == 20 and run_set["max_k"] == 10
    excluded = {
        "Balinese",
        "Early_Aramaic",
        "Greek",
        "Korean",
        "Latin",
        "Japanese_(katakana)",
        "Sanskrit",
        "Tagalog",
    }
    per_alphabet = {}
    for r in runs:
        assert r["alphabet"] not in excluded
        per_alphabet[r["alphabet"]] = per_alphabet.get(r["alphabet"], 0) + 1
    assert max(per_alphabet.values()) - min(per_alphabet.values()) <= 1


@pytest.mark.parametrize("k", [1, 3])
def test_official_layout_round_trip(small1_images, tmp_path, k):
    runs = run_set_runs(_small_set(small1_images, 2), k)
    write_run_folders(runs, small1_images, tmp_path)
    if k == 1:
        assert (tmp_path / "run01" / "training" / "class01.png").is_file()
    else:
        assert (tmp_path / "run01" / "training" / "class01").is_dir()
    back = read_run_folders(tmp_path)
    assert [r.name for r in back] == [r.name for r in runs]
    for original, read in zip(runs, back, strict=True):
        a, b = load_episode(original, small1_images), load_episode(read, FileImages())
        np.testing.assert_array_equal(a.support, b.support)
        np.testing.assert_array_equal(a.queries, b.queries)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_official_class_labels_format(small1_images, tmp_path):
    runs = run_set_runs(_small_set(small1_images, 2), 1)
    write_run_folders(runs[:1], small1_images, tmp_path)
    first = (tmp_path / "run01" / "class_labels.txt").read_text().splitlines()[0]
    assert first.startswith("run01/test/item01.png run01/training/class")
    assert first.endswith(".png")


def test_bad_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="class_labels.txt"):
        read_run_folder(tmp_path)
    (tmp_path / "class_labels.txt").write_text("garbage line\n")
    with pytest.raises(OmniglotFormatError, match=r"class_labels\.txt:1"):
        read_run_folder(tmp_path)


def test_unknown_run_set_is_named():
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        load_runs("nonexistent-k3")
