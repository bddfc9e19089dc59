"""The benchmark scripts run end to end with tiny settings (they write JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 2.3 min on the 2-core box: the largest share of the fast suite
def test_bench_gpu_smoke_prints_one_json_line_on_the_cpu(omniglot_root, tmp_path):
    env = {**os.environ, "CONCEPTLEARN_DATA": str(omniglot_root), "JAX_PLATFORMS": "cpu"}
    bindir = str(Path(sys.executable).parent)  # the `conceptlearn` entry point beside python
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    done = subprocess.run(
        ["bash", "scripts/bench_gpu.sh", "--smoke", "--out", str(tmp_path / "gpu"),
         "--library", str(tmp_path / "small1.npz")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["smoke"] is True and line["device"].startswith("cpu")
    assert line["full"]["runs"] == 1 and line["quick"]["runs"] == 1
    assert set(line["stages_full_s"]) >= {"proposals", "two-way refits", "total"}
    assert json.loads((tmp_path / "gpu" / "gpu.json").read_text()) == line


def test_vit_pretrain_curve_plots_the_recorded_loss(tmp_path):
    """The loss curve a checkpoint records is plotted and summarised; none is a clear error."""
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    curve = [[10 * (i + 1), 3.0 / (i + 1)] for i in range(50)]
    config = {"background": "small1+small2", "train_seconds": 600.0, "loss_curve": curve}
    (checkpoint / "config.json").write_text(json.dumps(config))
    out = tmp_path / "curve.png"
    done = subprocess.run(
        [sys.executable, "scripts/vit_pretrain_curve.py", str(checkpoint), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 500 and summary["loss_at_tenths"][-1] == 0.06
    assert abs(summary["last_fifth_drop"] - (1 - 40 / 50)) < 1e-3  # step 400: 3/40 -> 3/50
    assert out.stat().st_size > 0 and out.with_suffix(".svg").exists()
    config["loss_curve"] = []
    (checkpoint / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "scripts/vit_pretrain_curve.py", str(checkpoint), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode != 0 and "no loss_curve" in done.stderr


@pytest.mark.data
def test_drawer_affine_reports_the_small1_drawers_spread(omniglot_root, tmp_path):
    out = tmp_path / "affine.json"
    done = subprocess.run(
        [sys.executable, "scripts/drawer_affine.py", "--data", str(omniglot_root), "--out",
         str(out)], cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["background"] == ["small1"] and result["n_drawings"] > 1000
    for name in ("rotation_sd", "shear_sd", "log_scale_sd"):
        assert 0.05 < result[name] < 0.5, name


def test_dot_audit_counts_how_lone_blobs_thin():
    """A pen's 5 x 5 click thins into an edge and is a dot at 5 px; a lone pixel is a dot
    either way; a long bar is no blob."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("dot_audit", REPO / "scripts" / "dot_audit.py")
    dot_audit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dot_audit)
    image = np.zeros((105, 105), bool)
    image[20:25, 30:35] = True  # a click
    image[60, 60] = True  # a lone pixel
    image[80:83, 10:90] = True  # a bar of 240 px
    kinds = dot_audit.blob_kinds(image, max_area=60, dot_length=5.0)
    assert kinds == {"edge": 1, "pixel": 1, "dot": 2, "area": 26}
    assert dot_audit.blob_kinds(image, max_area=60, dot_length=0.0)["dot"] == 1
