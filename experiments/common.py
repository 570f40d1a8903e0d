"""Shared by the experiment scripts: where results go, and writing them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlp_jax.lifetime import end_with_starter

end_with_starter()  # an experiment started by the tests or by another experiment

COMMITTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# where results go: the committed results/, or elsewhere for a rerun that must not touch
# them (experiments.reproduce, the tests)
RESULTS = os.environ.get("MLP_JAX_RESULTS") or COMMITTED


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What a ``python -c CODE`` child runs first, so that it too ends with its starter
# (mlp_jax.lifetime imports neither jax nor numpy: the benchmark times scikit-learn's job
# and the bare floor in such children)
DIE_WITH_STARTER = "from mlp_jax.lifetime import end_with_starter\nend_with_starter()\n"


def run_python(args: list[str], start=subprocess.run, **options):
    """``python ARGS`` in a child process from the repository's root, which ends with
    this process however it ends (a killed experiment leaves nothing running: the
    child calls ``mlp_jax.lifetime.end_with_starter``, or for ``-c CODE`` runs
    DIE_WITH_STARTER first). ``start=subprocess.Popen`` returns the running child instead
    of waiting for it."""
    env = dict(options.pop("env", os.environ), MLP_JAX_PARENT=str(os.getpid()))
    if args[:1] == ["-c"]:
        args = ["-c", DIE_WITH_STARTER + args[1], *args[2:]]
    return start([sys.executable, *args], cwd=ROOT, env=env, **options)


def rss_peak() -> int:
    """This process's peak resident memory so far, in bytes (Linux's VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


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


def write_readme_block(name: str, text: str) -> str:
    """Replace the README's text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    with open(path) as f:
        readme = f.read()
    if start not in readme or end not in readme:
        raise SystemExit(f"README.md has no {start} ... {end} block to rewrite")
    head, rest = readme.split(start, 1)
    with open(path, "w") as f:
        f.write(head + start + "\n" + text.strip() + "\n" + end + rest.split(end, 1)[1])
    return path


def f3(v) -> str:
    """A number to 3 decimals, or a dash for a number not measured (None)."""
    return "—" if v is None else f"{v:.3f}"


def param_count(sizes) -> int:
    """Weights and biases of a plain net of these sizes."""
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


def width_for(depth: int, D: int, C: int, budget: int) -> tuple[int, ...]:
    """One width for every hidden layer of a ``depth``-layer net, its parameter count as
    close to ``budget`` as possible (``()`` for depth 1, the linear classifier)."""
    if depth == 1:
        return ()
    best = min(range(2, 2000),
               key=lambda w: abs(param_count((D, *[w] * (depth - 1), C)) - budget))
    return (best,) * (depth - 1)
