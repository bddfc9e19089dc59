"""The README's quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_has_one_quickstart_block():
    blocks = python_blocks(README.read_text())
    assert len(blocks) == 1 and "cl.learn(" in blocks[0]


@pytest.mark.slow  # parses six images with the generative model
def test_readme_quickstart_runs(omniglot_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPTLEARN_DATA", str(omniglot_root))
    monkeypatch.chdir(tmp_path)
    (block,) = python_blocks(README.read_text())
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["new"].shape == (3, 4, 105, 105)
    assert (tmp_path / "concepts.npz").exists()
