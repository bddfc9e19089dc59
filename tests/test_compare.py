"""The comparison script end to end with tiny arguments (MHD, 1 run, k = 1, 2, one shift)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _compare_main(argv):
    spec = importlib.util.spec_from_file_location("compare", REPO / "scripts" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_compare_writes_results_summary_and_plots(omniglot_root, tmp_path):
    out = tmp_path / "cmp"
    argv = ["--models", "mhd", "--ks", "1", "2", "--shifts", "thicken=2", "--limit", "1"]
    argv += ["--out", str(out), "--data", str(omniglot_root)]
    assert _compare_main(argv) == 0
    rows = json.loads((out / "summary.json").read_text())
    cells = [(r["model"], r["k"], r["shift"], r["n_runs"]) for r in rows]
    assert cells == [("mhd", 1, None, 1), ("mhd", 1, "thicken=2", 1), ("mhd", 2, None, 1)]
    assert all(0 <= r["error_pct"] <= 100 for r in rows)
    assert (out / "sample_efficiency.png").stat().st_size > 1000
    assert (out / "shifts.png").stat().st_size > 1000
    assert json.loads((out / "mhd_dev_k1_thicken2.json").read_text())["shift"] == "thicken=2"
    # A rerun resumes: nothing is recomputed and the numbers stay.
    before = (out / "mhd_dev_k2.json").read_text()
    assert _compare_main(argv) == 0
    assert (out / "mhd_dev_k2.json").read_text() == before
