"""The README's examples, run as written: each shows its code and then what it prints."""

import re
import subprocess
import sys
from pathlib import Path

import jax

from tests.timeouts import guard

README = Path(__file__).resolve().parents[1] / "README.md"


def example(heading: str) -> tuple[str, str]:
    """``(code, shown)``: the first Python block under ``heading`` and the block after it."""
    section = README.read_text().split(heading, 1)[1]
    code, after = section.split("```python\n", 1)[1].split("```\n", 1)
    return code, after.split("```\n", 1)[1].split("```", 1)[0]


def words(text: str) -> str:
    """The text with every number a ``#`` and runs of spaces one: its words, exactly."""
    return re.sub(r"[ \t]+", " ", re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "#", text))


def check_example(heading: str) -> None:
    """The example runs and prints what the README shows: exactly on a CPU (where it was
    made); elsewhere its words (rounding-level figures, and so column widths, differ)."""
    code, shown = example(heading)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=guard(120))
    assert proc.returncode == 0, proc.stderr[-2000:]
    if jax.default_backend() == "cpu":
        assert proc.stdout == shown
    else:
        assert words(proc.stdout) == words(shown)
