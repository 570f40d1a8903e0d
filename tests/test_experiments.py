"""Every experiment script runs end to end in --quick mode, and shows its qualitative result
wherever that is stable even in quick mode."""

import json
import os
import subprocess
import sys

import pytest

from experiments import reproduce
from tests.timeouts import guard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def run_quick(name, into):
    """The experiment's quick run, its results written under ``into``; an experiment
    behind the README's section must reproduce its committed quick numbers
    (``experiments.reproduce``: a fresh clone gets the README's figures)."""
    numbers = reproduce.rerun(name, True, into, timeout=guard(300))
    if name != "benchmark":
        assert os.path.getsize(os.path.join(into, f"{name}.quick.png")) > 10_000  # a figure
    if name in reproduce.SCRIPTS:
        differ = reproduce.compare(name, reproduce.reference(name, quick=True), numbers)
        assert not differ, "\n".join(differ)
    return numbers


@pytest.mark.calibration
def test_nonlinearity(tmp_path):
    r = run_quick("nonlinearity", tmp_path)
    assert r["collapse_max_rel_diff_float64"] < 1e-13
    lin, deep = r["linear classifier (2-3)"], r["3-layer linear net (2-100-100-3)"]
    relu = r["2-layer ReLU net (2-100-3)"]
    assert abs(lin - deep) < 0.05 and relu > lin + 0.2


@pytest.mark.calibration
def test_single_neuron_matches_sklearn(tmp_path):
    r = run_quick("single_neuron", tmp_path)
    assert abs(r["logistic"]["test_acc_ours"] - r["logistic"]["test_acc_sklearn"]) <= 1e-3
    assert r["logistic"]["weight_rel_diff"] < 1e-2
    assert r["hinge"]["objective_ours"] <= r["hinge"]["objective_sklearn"] * (1 + 1e-3)
    assert r["forgetting"]["measured_decay_per_step"] == pytest.approx(
        r["forgetting"]["formula_2_lr_reg"], rel=1e-4)


@pytest.mark.calibration
def test_saturation_sigmoid_gradients_vanish_at_init(tmp_path):
    r = run_quick("saturation", tmp_path)
    assert r["sigmoid"]["layer1_over_last_at_init"] < 0.05
    assert r["tanh"]["layer1_over_last_at_init"] > 0.1


@pytest.mark.calibration
def test_dead_relu(tmp_path):
    r = run_quick("dead_relu", tmp_path)
    relu = r["relu (pixels in [0, 1])"]["dead_fraction"]
    assert relu[-1] is None or relu[-1] > 0.5  # lr 3.0 kills (or blows up) the ReLU layer
    assert all(d in (0.0, None) for d in r["leaky_relu (pixels in [0, 1])"]["dead_fraction"])


@pytest.mark.calibration
def test_normalization_batch_norm_lifts_the_saturated_sigmoid_net(tmp_path):
    """Two epochs of SGD: the 8-layer sigmoid net stays at chance without a norm, and well
    above it with batch norm (evaluated by its running statistics)."""
    r = run_quick("normalization", tmp_path)
    sat = r["saturation"]
    assert sat["none"]["mean"] < 0.2 and sat["batchnorm"]["mean"] > 0.5
    assert set(r["depth"]["digits"]["4"]) == {"sizes", "none", "batchnorm", "layernorm"}


@pytest.mark.calibration
@pytest.mark.parametrize("name", ["capacity", "activations", "depth", "headline", "own_data"])
def test_runs(name, tmp_path):
    run_quick(name, tmp_path)


@pytest.mark.calibration
def test_universal_error_falls_with_width(tmp_path):
    r = run_quick("universal", tmp_path)
    assert r["max_error"][-1] < r["max_error"][0] / 2


@pytest.mark.calibration
def test_benchmark_smoke(tmp_path):
    r = run_quick("benchmark", tmp_path)
    assert {"cifar_step", "spiral", "sweep", "memory"} <= set(r)


@pytest.mark.calibration
def test_gradcheck_anchors(tmp_path):
    """Ours flags every wrong derivation and no right one; the anchors false-alarm on the
    kinked right derivation (leaky ReLU at 0) and miss the 1e-9 error ours sees."""
    r = run_quick("gradcheck_anchors", tmp_path)
    ours, jx = "check_grads (ours)", "jax.test_util.check_grads"
    assert all(v[ours] == r["draws"] for v in r["wrong"].values())
    assert all(v[ours] == 0 for v in r["right"].values())
    leaky = next(k for k in r["right"] if k.startswith("leaky"))
    assert r["right"][leaky][jx] == r["draws"]
    assert r["smallest_caught"][ours] <= 1e-9 < r["smallest_caught"][jx]


def test_report_conclusions_follow_the_numbers(tmp_path):
    """A conclusion is computed from its numbers: edit one JSON by hand and the sentence
    that depended on it changes (depth, capacity seeds, normalization, the SVM objectives,
    the Results table's digits goal)."""
    import shutil

    from experiments import report

    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "experiments", "results"), results)
    before = report.section(str(results))
    assert "On digits accuracy peaks at 2 layers" in before
    assert "every deeper net is worse" in before
    assert "Diminishing, then negative, returns" in before

    depth = json.loads((results / "depth.json").read_text())
    depth["digits"]["6"]["mean"] = 0.99  # the deepest net now wins on digits
    (results / "depth.json").write_text(json.dumps(depth))
    capacity = json.loads((results / "capacity.json").read_text())
    for w in capacity["spread"]:
        capacity["spread"][w]["std"] = 0.05  # no width converges any more
    (results / "capacity.json").write_text(json.dumps(capacity))
    assert "layer norm beats no norm on 1 of 6" in before
    norm = json.loads((results / "normalization.json").read_text())
    for row in norm["depth"]["digits"].values():
        row["layernorm"]["mean"] = 0.99  # layer norm now wins every digits net
    norm["saturation"]["layernorm"]["mean"] = 0.9  # and rescues the sigmoid net
    (results / "normalization.json").write_text(json.dumps(norm))
    assert "Why layer norm cannot rescue the sigmoid net" in before
    after = report.section(str(results))
    assert "layer norm beats no norm on 3 of 6" in after
    assert "Why layer norm cannot rescue" not in after and "At init, in the plain" in after
    assert "On digits accuracy is best at the deepest net tried (6 layers, 0.990)" in after
    assert "Diminishing, then negative, returns" not in after
    assert "does not vanish with width" in after and "every seed converges" not in after

    headline = json.loads((results / "headline.json").read_text())
    headline["digits_mlp"]["test_acc_per_seed"] = [0.96, 0.965, 0.971, 0.95]
    headline["digits_mlp"]["test_acc_mean"] = 0.9615
    headline["digits_mlp"]["test_acc_best_val_per_seed"] = [0.97, 0.965, 0.98, 0.94]
    headline["spiral_2layer_reg0.0005_seeds"]["train_loss"] = [0.3, 0.25, 0.2]
    (results / "headline.json").write_text(json.dumps(headline))
    table = report.results_table(str(results))
    assert "1 of 4 seeds reach 0.97" in table and "**0.9615**" not in table
    assert "lower than the final params for 1 of 4 seeds" in table
    assert "the final loss (data + penalty) is 0.200–0.300 over 3 seeds" in table



def test_performance_tables_follow_the_benchmark(tmp_path):
    """The README's performance tables come from the benchmark's JSON: ratios and goal
    marks are computed, and the GPU table appears only where a GPU run was kept."""
    import shutil

    from experiments import report

    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "experiments", "results"), results)
    b = json.loads((results / "benchmark.json").read_text())
    b["spiral"].update(fused_s=1.0, numpy_s=5.0)
    b["sweep"].update(sequential_s=30.0, variants_s={"1 device, map": 20.0,
                                                     "2 devices, map": 10.0},
                      api_first_s=14.0, api_second_s=10.5, api_program="2 devices, map")
    b["time_to_result"] = {"epochs": 100, "rounds": 3, "test_acc": {"mlp_jax": 0.97,
                                                                    "sklearn": 0.96},
                           "seconds": {"warm": 2.0, "cold": 5.0, "sklearn": 2.5}}
    (results / "benchmark.json").write_text(json.dumps(b))
    (results / "benchmark_gpu.json").unlink(missing_ok=True)
    text = report.performance(str(results))
    assert "| numpy 5.000 s | 5.0× | ≥ 4.5× ✓ |" in text
    assert "one sweep (2 devices, map) | 10.00 s | 64 sequential calls 30.00 s | 3.00× | " \
           "≥ 2.5× ✓ |" in text
    assert "over 2 devices instead of 1 gives 2.00× (20.00 s → 10.00 s)" in text
    assert "On a GPU" not in text
    assert "(the first call: 14.00 s) | 10.50 s | its compiled program alone (2 devices, " \
           "map) 10.00 s | 1.05× | ≤ 1.1× ✓ |" in text
    assert "test acc 0.9700 | scikit-learn" in text and "| 0.80× its time | ≤ 1× ✓ |" in text
    assert "| … cold (an empty compilation cache) | 5.00 s | | 2.00× | ≤ 1.5× ✗ |" in text
    b["spiral"]["numpy_s"] = 4.0
    (results / "benchmark.json").write_text(json.dumps(b))
    assert "| 4.0× | ≥ 4.5× ✗ |" in report.performance(str(results))

def test_the_readme_blocks_are_what_the_report_writes(monkeypatch):
    """Each README block the report owns reads exactly as the experiments render it from
    the committed JSON: no figure edited by hand, none left stale by a renderer's change.
    (The library versions the section names are the README's own: a fresh install may
    resolve newer ones.)"""
    import re

    from experiments import report

    readme = open(os.path.join(ROOT, "README.md")).read()
    named = re.search(r"\(these numbers: (.*?), CPU\)", readme).group(1)
    monkeypatch.setattr(report, "versions", lambda: named)
    for name, render in report.BLOCKS.items():
        block = readme.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->")[0]
        assert block.strip("\n") == render().strip("\n"), name


def test_mutation_score_counts_and_lists_what_survived():
    """The README's mutation table: killed, survived, timed out, not run, and the listed
    equivalent survivors counted apart (they are left out of the score). A mutant no test
    reaches (mutmut's 33) is a survivor: nobody would notice its line being wrong."""
    from experiments import mutation_score as ms

    codes = {"mlp_jax.losses.x_a__mutmut_1": 1, "mlp_jax.losses.x_a__mutmut_2": 1,
             "mlp_jax.losses.x__hinge_value__mutmut_5": 0,  # listed as equivalent
             "mlp_jax.losses.x_b__mutmut_3": 0, "mlp_jax.losses.x_b__mutmut_4": 33,
             "mlp_jax.losses.x_b__mutmut_5": 36, "mlp_jax.optim.x_c__mutmut_1": None}
    table = ms.score(codes)
    assert table["losses"] == {"mutants": 6, "killed": 2, "equivalent": 1, "survived": 2,
                               "timeout": 1}
    assert table["optim"] == {"mutants": 1, "not run": 1}
    lines = ms.markdown(table).splitlines()
    assert lines[2] == "| losses | 6 | 2 | 1 | 2 | 1 | 0 | 50.0% |"
    assert lines[3] == "| optim | 1 | 0 | 0 | 0 | 0 | 1 | - |"
    assert lines[4] == "| all | 7 | 2 | 1 | 2 | 1 | 1 | 50.0% |"
    section = ms.section(codes)
    assert "`losses.x__hinge_value__mutmut_5`: `[:, 0]` -> `[:, 1]`" in section
    assert "The 2 survivors no test notices yet" in section  # listed, to be fixed
    assert "- `losses.x_b__mutmut_3`\n- `losses.x_b__mutmut_4`" in section
    assert "x_elu__" not in section and "x_a__" not in section


def test_mutation_rerun_names_the_changed_mutated_modules_only():
    """``--changed BASE``: mutmut patterns for the mutated files a diff touched, nothing for
    the unmutated ones; the mutated list is pyproject's, the one `mutmut run` reads."""
    from experiments import mutation_score as ms

    mutated = ms.mutated_modules()
    assert "mlp_jax/losses.py" in mutated and "mlp_jax/cli.py" not in mutated
    diff = ["README.md", "mlp_jax/losses.py", "mlp_jax/cli.py", "tests/test_losses.py",
            "mlp_jax/optim.py"]
    assert ms.changed_patterns(diff, mutated) == ["mlp_jax.losses.*", "mlp_jax.optim.*"]
    assert ms.changed_patterns(["mlp_jax/train.py"], mutated) == []


@pytest.mark.slow
@pytest.mark.calibration
def test_derivatives_corpus_quick(tmp_path):
    """check_derivative on a slice of the corpus: no false alarm, every exercised mistake
    caught (the full run is the README's table)."""
    proc = subprocess.run([sys.executable, "-m", "experiments.derivatives", "--quick"],
                          cwd=ROOT, env=dict(os.environ, MLP_JAX_RESULTS=str(tmp_path)),
                          capture_output=True, text=True, timeout=guard(600))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "derivatives.quick.json") as f:
        numbers = json.load(f)
    for dtype, cell in numbers["table"]["correct"].items():
        assert cell["ours"] == 0 and cell["n"] > 0, (dtype, cell)
    for dtype, cell in numbers["table"]["wrong"].items():
        assert cell["ours"] == cell["n"], (dtype, cell)


@pytest.mark.slow
@pytest.mark.calibration
def test_derivative_options_corpus_quick(tmp_path):
    """A slice of the approximate, second-order, complex and batching corpus: no right
    rule FAILs, every wrong one does."""
    proc = subprocess.run([sys.executable, "-m", "experiments.derivative_options", "--quick"],
                          cwd=ROOT, env=dict(os.environ, MLP_JAX_RESULTS=str(tmp_path)),
                          capture_output=True, text=True, timeout=guard(900))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "derivative_options.quick.json") as f:
        rows = json.load(f)["rows"]
    assert {r["kind"] for r in rows} == {"approximate", "second order", "complex", "batching"}
    assert all(r["verdict"] != "FAIL" for r in rows if not r["wrong"])
    assert all(r["verdict"] == "FAIL" for r in rows if r["wrong"])
