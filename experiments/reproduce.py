"""Do the README's experiment figures reproduce? Rerun the experiments and compare.

    python -m experiments.reproduce                   # full runs vs results/NAME.json
    python -m experiments.reproduce nonlinearity      # some of them
    python -m experiments.reproduce --quick           # quick runs vs results/quick_reference.json
    python -m experiments.reproduce --quick --record  # rewrite quick_reference.json

The README's experiment section is written from results/NAME.json (``experiments.report``);
the quick runs, which the tests run, are compared with ``quick_reference.json``. Each rerun
writes into a temporary directory (``MLP_JAX_RESULTS``): the committed numbers are never
touched. A number reproduces when ``|now - then| <= abs + rel * |then|`` under the first
rule of TOLERANCES whose pattern matches its path (``name/key/...``; list entries by
index); strings, booleans and None must be equal, and so must the set of paths. Prints one
line per figure outside its tolerance and exits 1 if there is any.

Why tolerances at all: the runs are deterministic on one machine and one set of library
versions, but XLA's CPU code (vector width, threads, version) rounds float32 differently
elsewhere, and long trainings at large learning rates amplify rounding into a different
example or two (the nonlinearity experiment's ReLU net: 297 or 296 of 300 spiral points
after 10,000 full-batch steps at lr 1.0). Figures that come from scikit-learn depend on
its version: ``single_neuron``'s LinearSVC solution is where liblinear stops short of the
optimum, which moved with its random visiting order until the experiment fixed
``random_state`` (objective 0.0795271 in an earlier JSON, 0.0792911 on another run).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments.common import COMMITTED, run_python  # noqa: E402
from experiments.report import SCRIPTS  # noqa: E402  (the experiments behind the README)

QUICK_REFERENCE = os.path.join(COMMITTED, "quick_reference.json")

# (pattern, abs, rel), first match wins. Accuracies: a few examples of the smallest split
# (300 spiral points, 360 digits); training-step counts and losses: a few per cent;
# scikit-learn's own solvers: their version's stopping points.
TOLERANCES = [
    ("*seconds*", math.inf, 0.0),  # how long a run took: the machine's, not a figure
    ("nonlinearity/collapse_max_rel_diff_float64", 1e-13, 0.0),  # float64 rounding, any machine
    ("single_neuron/*sklearn*", 0.0, 0.01),
    ("*acc*", 0.02, 0.0),
    ("*/curves/*", 0.05, 0.1),  # per-epoch curves: the trajectory, not its digits
    ("*steps_to_target*", 2.0, 0.1),
    ("*", 1e-3, 0.05),
]


def leaves(tree, prefix: str = "") -> dict:
    """Every number, string, boolean or None in a JSON tree, by its ``a/b/0`` path."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out = {}
    for k, v in items:
        out.update(leaves(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def tolerance(path: str) -> tuple[float, float]:
    return next((a, r) for pattern, a, r in TOLERANCES if fnmatch.fnmatchcase(path, pattern))


def compare(name: str, then: dict, now: dict) -> list[str]:
    """One line per number of ``now`` that is not ``then``'s within its tolerance (and per
    path only one of them has)."""
    old, new = leaves(then, name), leaves(now, name)
    bad = [f"{p}: {'missing now' if p in old else 'new'}" for p in sorted(old.keys() ^ new.keys())]
    for path in sorted(old.keys() & new.keys()):
        a, b = old[path], new[path]
        number = (isinstance(a, (int, float)) and isinstance(b, (int, float))
                  and not isinstance(a, bool) and not isinstance(b, bool))
        if not number:
            if a != b:
                bad.append(f"{path}: {b!r}, was {a!r}")
            continue
        tol_abs, tol_rel = tolerance(path)
        if not abs(b - a) <= tol_abs + tol_rel * abs(a):
            bad.append(f"{path}: {b:.6g}, was {a:.6g} (tolerance {tol_abs:g} + {tol_rel:g}"
                       " relative)")
    return bad


class RunFailed(RuntimeError):
    """An experiment's run ended with an error (the message ends with its stderr)."""


def rerun(name: str, quick: bool, into, timeout: float | None = None) -> dict:
    """``python -m experiments.NAME`` with its results written under ``into``: its
    numbers (the tests' quick runs use this too)."""
    proc = run_python(["-m", f"experiments.{name}"] + ["--quick"] * quick,
                      env=dict(os.environ, MLP_JAX_RESULTS=str(into)), capture_output=True,
                      text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RunFailed(f"experiments.{name} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(into, f"{name}{'.quick' if quick else ''}.json")) as f:
        return json.load(f)


def reference(name: str, quick: bool) -> dict:
    if quick:
        with open(QUICK_REFERENCE) as f:
            return json.load(f)[name]
    with open(os.path.join(COMMITTED, f"{name}.json")) as f:
        return json.load(f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"experiments (default: all of {', '.join(SCRIPTS)})")
    p.add_argument("--quick", action="store_true", help="the quick runs, against "
                   "quick_reference.json")
    p.add_argument("--record", action="store_true", help="with --quick: write the quick runs' "
                   "numbers as the reference instead of comparing")
    args = p.parse_args(argv)
    if args.record and not args.quick:
        p.error("--record rewrites the quick reference; the full numbers are the README's "
                "(python -m experiments.report --run)")
    unknown = [n for n in args.names if n not in SCRIPTS]
    if unknown:
        p.error(f"unknown experiment {unknown[0]!r}; expected some of {', '.join(SCRIPTS)}")
    names = args.names or list(SCRIPTS)
    recorded, failures = {}, 0
    with tempfile.TemporaryDirectory() as into:
        for name in names:
            try:
                now = rerun(name, args.quick, into)
            except RunFailed as e:
                raise SystemExit(str(e)) from None
            if args.record:
                recorded[name] = now
                print(f"{name}: recorded", flush=True)
                continue
            bad = compare(name, reference(name, args.quick), now)
            failures += bool(bad)
            print(f"{name}: " + ("reproduced" if not bad else f"{len(bad)} numbers differ"),
                  flush=True)
            for line in bad:
                print("  " + line)
    if args.record:
        old = {}
        if os.path.exists(QUICK_REFERENCE):
            with open(QUICK_REFERENCE) as f:
                old = json.load(f)
        with open(QUICK_REFERENCE, "w") as f:
            json.dump({**old, **recorded}, f, indent=1, sort_keys=True)
        print(f"wrote {QUICK_REFERENCE}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
