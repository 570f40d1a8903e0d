"""The README's code runs as written: every Python block, each in a fresh interpreter
in an empty directory (the training block writes runs/x there)."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.timeouts import guard

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
# a block inside a list item is indented with it
BLOCKS = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", README, flags=re.S)]


def test_the_readme_has_the_blocks_we_mean_to_run():
    assert len(BLOCKS) >= 3
    assert any("train.fit(" in b for b in BLOCKS) and any("check_grads" in b for b in BLOCKS)


@pytest.mark.calibration
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(index, tmp_path):
    proc = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=guard(300))
    assert proc.returncode == 0, f"block {index}:\n{BLOCKS[index]}\n{proc.stderr[-3000:]}"
