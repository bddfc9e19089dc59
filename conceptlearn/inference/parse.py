"""``conceptlearn parse IMAGE --out parse.png``: the best parses of one image, drawn and as JSON.

``conceptlearn parse --errors RESULTS.json --runs dev --out DIR`` instead draws, for the first
``--max-errors`` misclassified queries of a harness results file, the parses of the query, of
its true class image and of the predicted class image (one PNG per error, in ``DIR``).

Each panel shows one of the K best parses over the (faded) image: strokes in drawing order
(colour by order, a number at each stroke's start, an arrow at its end) and the parse's
posterior weight. The JSON (``--json``, default: ``--out`` with ``.json``) holds, per parse,
its weight, log score and strokes as lists of ``[col, row]`` points.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conceptlearn.inference.fit import Parse

COLOURS = [
    "tab:red",
    "tab:blue",
    "tab:green",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
]


def parse_to_json(parse: Parse) -> list[dict]:
    """The valid parses of one image as JSON-ready dicts (strokes as ``[[col, row], ...]``)."""
    out = []
    for k in range(parse.points.shape[0]):
        if not np.isfinite(float(parse.log_post[k])):
            continue
        strokes = [
            np.asarray(parse.points[k, s])[np.asarray(parse.mask[k, s])].round(2).tolist()
            for s in range(parse.points.shape[1])
            if bool(parse.mask[k, s].any())
        ]
        out.append(
            {
                "weight": float(np.exp(parse.log_weight[k])),
                "log_score": float(parse.log_post[k]),
                "strokes": strokes,
            }
        )
    return out


def draw_parses(image: np.ndarray, parse: Parse, path: str | Path, title: str = "") -> None:
    """Save a figure of ``image bool (105, 105)`` with each valid parse's strokes over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parses = parse_to_json(parse)
    n = max(len(parses), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
    for ax, p in zip(axes[0], parses or [None], strict=True):
        ax.imshow(~np.asarray(image, bool), cmap="gray", vmin=0, vmax=1, alpha=0.35)
        ax.set_xticks([])
        ax.set_yticks([])
        if p is None:
            continue
        for i, stroke in enumerate(p["strokes"]):
            xy = np.asarray(stroke)
            colour = COLOURS[i % len(COLOURS)]
            ax.plot(xy[:, 0], xy[:, 1], "-", color=colour, lw=2)
            if len(xy) > 1:
                ax.annotate(
                    "", xy=xy[-1], xytext=xy[-2], arrowprops={"arrowstyle": "->", "color": colour}
                )
            ax.text(xy[0, 0], xy[0, 1], str(i + 1), color=colour, fontsize=9, weight="bold")
        ax.set_title(f"w={p['weight']:.2f}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_error_overlays(
    results_path: str | Path,
    runs_spec: str,
    out_dir: str | Path,
    cfg,
    max_errors: int = 20,
    library=None,
) -> list[Path]:
    """Parse overlays of the misclassified queries in a harness results file (k = 1 runs): the
    ``max_errors`` worst (largest score margin of the winner over the true class) when the file
    records margins, else the first in run order."""
    from conceptlearn.datasets.episodes import load_episode, load_runs
    from conceptlearn.inference.fit import parse_image

    results = json.loads(Path(results_path).read_text())
    run_list, source = load_runs(runs_spec)
    runs = {r.name: r for r in run_list}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = [
        (-res.get("margins", [0.0] * len(res["labels"]))[q], i, q, pred, label)
        for i, res in enumerate(results["runs"])
        for q, (pred, label) in enumerate(zip(res["predictions"], res["labels"], strict=True))
        if pred != label
    ]
    episodes = {}  # run index -> Episode, each read once
    written = []
    for rank, (_, i, q, pred, label) in enumerate(sorted(errors)[:max_errors]):
        run = runs[results["runs"][i]["run"]]
        if i not in episodes:
            episodes[i] = load_episode(run, source)
        episode = episodes[i]
        images = [episode.queries[q], episode.support[label, 0], episode.support[pred, 0]]
        names = ["query", f"true class {label}", f"predicted {pred}"]
        path = out_dir / f"{rank:02d}_{run.name}_q{q:02d}.png"
        panels = []
        for im, name in zip(images, names, strict=True):
            tmp = out_dir / f".{name.split()[0]}.png"
            draw_parses(im, parse_image(im, cfg, library=library), tmp, title=name)
            panels.append(tmp)
        _stack_vertically(panels, path)
        written.append(path)
    return written


def _stack_vertically(paths: list[Path], out: Path) -> None:
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (max(i.width for i in ims), sum(i.height for i in ims)), "white")
    y = 0
    for im in ims:
        canvas.paste(im, (0, y))
        y += im.height
    canvas.save(out)
    for p in paths:
        p.unlink()
