"""``--set KEY=VALUE`` parsing, shared by every command and script that takes overrides."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def parse_key_values(items: Sequence[str] | None) -> dict[str, Any]:
    """``["lr=0.01", "blocks=\"all\""]`` (repeated ``--set KEY=VALUE`` flags) -> a dict; each
    value is parsed as JSON when it can be, else kept as a string."""
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed
