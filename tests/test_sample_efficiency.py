"""The sample-efficiency sweep script end to end with tiny arguments (MHD, 1 run, k = 1, 2)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_writes_results_summary_and_plot(omniglot_root, tmp_path):
    out = tmp_path / "se"
    argv = [
        "--models",
        "mhd",
        "--ks",
        "1",
        "2",
        "--limit",
        "1",
        "--out",
        str(out),
        "--data",
        str(omniglot_root),
    ]
    assert _script("sample_efficiency").main(argv) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert [(r["model"], r["k"], r["n_runs"]) for r in rows] == [("mhd", 1, 1), ("mhd", 2, 1)]
    assert all(0 <= r["error_pct"] <= 100 for r in rows)
    assert (out / "sample_efficiency.png").stat().st_size > 1000
    k2 = json.loads((out / "mhd_dev_k2.json").read_text())
    assert k2["runs_spec"] == "dev-k2"
    # A rerun resumes: nothing is recomputed and the numbers stay.
    before = (out / "mhd_dev_k1.json").read_text()
    assert _script("sample_efficiency").main(argv) == 0
    assert (out / "mhd_dev_k1.json").read_text() == before
