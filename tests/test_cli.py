"""The command line end to end: make-runs writes the official layout, evaluate reads it back and
agrees with evaluating the committed run set directly."""

from __future__ import annotations

import json

import pytest

from conceptlearn.cli import COMMANDS, main


def test_make_runs_then_evaluate_folder_matches_set(omniglot_root, tmp_path):
    data = ["--data", str(omniglot_root)]
    assert main(["make-runs", "--runs", "dev-k2", "--out", str(tmp_path / "runs"), *data]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir())[:2] == ["run01", "run02"]
    assert len(list((tmp_path / "runs" / "run01" / "training" / "class01").glob("*.png"))) == 2

    common = ["evaluate", "--model", "mhd", "--no-progress", *data]
    assert (
        main(
            [*common, "--runs", str(tmp_path / "runs" / "run01"), "--out", str(tmp_path / "a.json")]
        )
        == 0
    )
    assert (
        main([*common, "--runs", "dev-k2", "--limit", "1", "--out", str(tmp_path / "b.json")]) == 0
    )
    from_folder = json.loads((tmp_path / "a.json").read_text())["runs"][0]
    from_set = json.loads((tmp_path / "b.json").read_text())["runs"][0]
    assert from_folder["run"] == from_set["run"] == "run01"
    assert from_folder["predictions"] == from_set["predictions"]
    assert from_folder["labels"] == from_set["labels"]

    shifted = [
        "--runs",
        "dev-k2",
        "--limit",
        "1",
        "--shift",
        "thicken=2",
        "--out",
        str(tmp_path / "c.json"),
    ]
    assert main([*common, *shifted]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["shift"] == "thicken=2"
    with pytest.raises(ValueError, match="--shift 'spin=2'"):
        main([*common, "--runs", "dev", "--shift", "spin=2", "--out", str(tmp_path / "d.json")])


def test_unknown_model_is_named(omniglot_root, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        main(
            [
                "evaluate",
                "--model",
                "nope",
                "--runs",
                "dev",
                "--out",
                str(tmp_path / "x.json"),
                "--data",
                str(omniglot_root),
            ]
        )


def test_option_a_model_does_not_take(omniglot_root, tmp_path):
    with pytest.raises(ValueError, match="does not accept"):
        main(
            [
                "evaluate",
                "--model",
                "mhd",
                "--library",
                "lib.npz",
                "--runs",
                "dev",
                "--out",
                str(tmp_path / "x.json"),
            ]
        )


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: conceptlearn" in capsys.readouterr().out
