"""Shared by the experiment scripts: where results go, and writing them."""

from __future__ import annotations

import json
import os
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def quick_mode() -> bool:
    """``--quick``: the small, seconds-long version the test suite runs."""
    return "--quick" in sys.argv[1:]


def write_json(name: str, numbers: dict, quick: bool) -> str:
    """Write ``results/NAME.json`` (``NAME.quick.json`` in quick mode); returns the path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}{'.quick' if quick else ''}.json")
    with open(path, "w") as f:
        json.dump(numbers, f, indent=1)
    return path


def figure_path(name: str, quick: bool) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    return os.path.join(RESULTS, f"{name}{'.quick' if quick else ''}.png")
