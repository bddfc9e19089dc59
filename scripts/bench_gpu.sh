#!/usr/bin/env bash
# The bpl GPU check in one go (issue 11): the jit compile, 20 dev runs with the full preset,
# 20 with --quick, and the stage breakdown; prints one JSON line and writes it to OUT/gpu.json.
#
#   bash scripts/bench_gpu.sh [--smoke] [--out DIR] [--library LIB.npz]
#
# Run it on any device: it reports what jax found. --smoke (for CPU and the tests) runs one
# dev run per preset with a tiny config. The library is learned from small1 first if missing
# (about 15 s). CONCEPTLEARN_DATA must point at the Omniglot zips.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
out=results/bench_gpu
library=results/small1.npz
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --library) library="$2"; shift 2 ;;
    *) echo "bench_gpu.sh: unknown argument $1 (use --smoke, --out DIR, --library LIB)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"

if [[ ! -f "$library" ]]; then
  conceptlearn learn --background small1 --out "$library" > "$out/learn.log"
fi

runs=20
stage_runs=(0 1 2)
tiny=()
if [[ $smoke == 1 ]]; then
  runs=1
  stage_runs=(0 1)
  tiny=(--set max_candidates=2 --set max_strokes=3 --set n_points=8 --set parse_steps=2
        --set parse_coarse_steps=2 --set refit_steps=2 --set refit_coarse_steps=2 --set wide_lr=0)
fi

now() { python -c 'import time; print(time.time())'; }
evaluate() {  # evaluate NAME [flags...]: 20 dev runs, one process; prints the wall seconds
  local name=$1; shift
  rm -f "$out/$name.json"
  local start; start=$(now)
  conceptlearn evaluate --model bpl --library "$library" --runs dev --limit "$runs" \
    --no-progress --out "$out/$name.json" "${tiny[@]}" "$@" > "$out/$name.log"
  python -c "import time; print(round(time.time() - $start, 2))"
}

python scripts/bench_bpl.py --library "$library" --runs "${stage_runs[@]}" "${tiny[@]}" \
  --out "$out/stages_full.json" > /dev/null
full_s=$(evaluate full)
quick_s=$(evaluate quick --quick)

python - "$out" "$full_s" "$quick_s" "$smoke" <<'PY'
import json, sys
from pathlib import Path

out, full_s, quick_s, smoke = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
stages = json.loads((out / "stages_full.json").read_text())
line = {"smoke": smoke, "device": stages["device"], "compile_episode_s": stages["compile_episode_s"],
        "stages_full_s": stages["seconds_per_episode"], "refits_per_s": stages["refits_per_s"],
        "peak_device_gb": stages["peak_device_gb"], "peak_rss_gb": stages["peak_rss_gb"]}
for name, wall in (("full", full_s), ("quick", quick_s)):
    res = json.loads((out / f"{name}.json").read_text())
    line[name] = {"runs": len(res["runs"]), "error_pct": round(res["mean_error_pct"], 2),
                  "wall_s": wall, "episodes_s": round(res["seconds_total"], 2),
                  "after_first_s": round(sum(r["seconds"] for r in res["runs"][1:]), 2)}
text = json.dumps(line)
(out / "gpu.json").write_text(text + "\n")
print(text)
PY
