"""The benchmark scripts run end to end with tiny settings (they write JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
