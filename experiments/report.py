"""Regenerate the README's result blocks from the experiments' JSON.

    python -m experiments.report --run   # run every experiment (full), then rewrite README
    python -m experiments.report         # rewrite from the JSON already in results/

Each experiment renders its own block from its JSON (``readme(r)`` beside the constants
it describes, in ``experiments/NAME.py``; the benchmark's, with its goals, in
``experiments/performance.py``); this module puts them in order and writes each between
its ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers
(:func:`experiments.common.write_readme_block`, the one README writer). Every conclusion is
computed from the numbers it summarizes, with the condition it checked, so a rerun whose
numbers change changes (or withdraws) the sentence.
"""

import importlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import performance as perf  # noqa: E402
from experiments.common import RESULTS, run_python, write_readme_block  # noqa: E402

SCRIPTS = ["headline", "nonlinearity", "activations", "saturation", "dead_relu",
           "single_neuron", "capacity", "universal", "depth", "normalization"]


def load(results: str, name: str) -> dict:
    with open(os.path.join(results, f"{name}.json")) as f:
        return json.load(f)


def versions() -> str:
    """The libraries the numbers depend on, as installed where the report was written."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("jax", "numpy", "scikit-learn"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def section(results: str = RESULTS) -> str:
    """The experiments section: a header, then each experiment's block and figure."""
    out = ["## Experiments: the lectures' claims, measured", "",
           "Each experiment: `python -m experiments.NAME` (`--quick` for a seconds-long "
           "smoke run, which the tests run). All of them and this section: "
           f"`python -m experiments.report --run` (these numbers: {versions()}, CPU).", "",
           "**Reproducing them**: `python -m experiments.reproduce [NAME ...]` reruns the "
           "experiments and compares every number with the committed one within the "
           "tolerances in `experiments/reproduce.py` (accuracies ±0.02, step counts, losses "
           "and the rest a few per cent; how long a run took is not compared): XLA rounds "
           "float32 differently on other CPUs and versions, and long trainings at large "
           "learning rates amplify that into an example or two. The tests rerun the quick "
           "forms against `experiments/results/quick_reference.json`. Two kinds of number "
           "depend on the library versions beyond that: runs at the edge of divergence "
           "(`dead_relu` at lr ≥ 1 diverges or not) and scikit-learn's solvers "
           "(`single_neuron`'s LinearSVC stops short of the optimum where its version "
           "stops).", ""]

    for name in SCRIPTS[1:]:  # the headline's numbers are the Results table
        experiment = importlib.import_module(f"experiments.{name}")
        out += [*experiment.readme(load(results, name)), "",
                f"![](experiments/results/{name}.png)", ""]
    return "\n".join(out)


def results_table(results: str = RESULTS) -> str:
    """The README's Results table, from headline.json."""
    return "\n".join(importlib.import_module("experiments.headline").readme(
        load(results, "headline")))


def performance(results: str = RESULTS) -> str:
    """The README's performance tables, from benchmark.json (and benchmark_gpu.json, a run
    on a GPU machine, where there is one)."""
    gpu = os.path.join(results, "benchmark_gpu.json")
    return "\n".join(perf.readme(load(results, "benchmark"),
                                 load(results, "benchmark_gpu") if os.path.exists(gpu) else None))


BLOCKS = {"results": results_table, "performance": performance, "experiments": section}


if __name__ == "__main__":
    if "--run" in sys.argv:
        for name in SCRIPTS:
            print(f"== {name}", flush=True)
            run_python(["-m", f"experiments.{name}"], check=True)
    for block, render in BLOCKS.items():
        path = write_readme_block(block, render())
    print(f"rewrote the Results table, the performance tables and the experiments section of "
          f"{path}")
