"""Regenerate the README's experiments section from the scripts' results.

    python -m experiments.report --run   # run every experiment (full), then rewrite README
    python -m experiments.report         # rewrite from the JSON already in results/

The section lies between the markers <!-- experiments:start --> and <!-- experiments:end -->.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
SCRIPTS = ["nonlinearity", "activations", "saturation", "dead_relu", "single_neuron",
           "capacity", "universal", "depth"]
START, END = "<!-- experiments:start -->", "<!-- experiments:end -->"


def load(name):
    with open(os.path.join(RESULTS, f"{name}.json")) as f:
        return json.load(f)


def f3(v):
    return "—" if v is None else f"{v:.3f}"


def section() -> str:
    out = [START, "", "## Experiments: the lectures' claims, measured", "",
           "Each experiment: `python -m experiments.NAME` (`--quick` for a seconds-long "
           "smoke run, which the tests run). All of them and this section: "
           "`python -m experiments.report --run`.", ""]

    r = load("nonlinearity")
    out += ["### Why the nonlinearity (`nonlinearity`)", "",
            f"A 3-layer identity-activation net equals the single map `W3 W2 W1` to "
            f"{r['collapse_max_rel_diff_float64']:.1e} (float64), and on the spiral learns "
            "no more:", "",
            "| net | spiral train acc |", "|---|---|"]
    out += [f"| {k} | {v:.4f} |" for k, v in r.items() if k.endswith(")")]
    out += ["", "![](experiments/results/nonlinearity.png)", ""]

    r = load("activations")
    acts = [k for k in r["spiral"] if isinstance(r["spiral"][k], dict)]
    out += ["### Activation functions compared (`activations`)", "",
            "SGD + momentum 0.9, same net, init rule and lr per dataset. Steps to reach the "
            "target training loss (— : never within the run); accuracies at the end.", "",
            "| activation | " + " | ".join(f"{d}: steps to {r[d]['target_loss']} / train / test"
                                          for d in r) + " |",
            "|---|" + "---|" * len(r)]
    for a in acts:
        cells = []
        for d in r:
            c = r[d][a]
            cells.append(f"{c['steps_to_target'] or '—'} / {c['train_acc']:.3f} / "
                         f"{f3(c.get('test_acc'))}")
        out.append(f"| {a} | " + " | ".join(cells) + " |")
    ratios = ", ".join(f"{d} {f3(r[d]['tanh_over_relu_steps'])}" for d in r)
    out += ["", f"tanh/ReLU steps-to-target ratio: {ratios}. The lectures cite ~6× for a "
            "CIFAR-10 convnet; these shallow MLPs show a much smaller gap.", "",
            "![](experiments/results/activations.png)", ""]

    r = load("saturation")
    out += ["### Saturation and vanishing gradients (`saturation`)", "",
            "8-layer nets on digits, SGD lr 0.05; gradient norms from `diagnostics`.", "",
            "| activation (init) | ‖dW1‖/‖dW8‖ at init | test acc after training |",
            "|---|---|---|"]
    out += [f"| {a} | {v['layer1_over_last_at_init']:.2e} | {v['test_acc']:.3f} |"
            for a, v in r.items()]
    out += ["", "![](experiments/results/saturation.png)", ""]

    r = load("dead_relu")
    out += ["### Dead ReLUs (`dead_relu`)", "",
            f"Fraction of the 200 hidden units that never fire over the training set, after "
            f"{r['epochs']} epochs of SGD, by learning rate (digits).", "",
            "| net (input) | at init | " + " | ".join(f"lr {lr}" for lr in r["lrs"]) + " |",
            "|---|---|" + "---|" * len(r["lrs"])]
    for k, v in r.items():
        if isinstance(v, dict):
            cells = ["diverged" if d is None else f"{d:.3f}" for d in v["dead_fraction"]]
            out.append(f"| {k} | {v['dead_at_init']:.3f} | " + " | ".join(cells) + " |")
    out += ["", "![](experiments/results/dead_relu.png)", ""]

    r = load("single_neuron")
    lg, hg = r["logistic"], r["hinge"]
    out += ["### A single neuron is a linear classifier (`single_neuron`)", "",
            f"Breast cancer ({r['N']} train); our reg {r['reg']} ↔ scikit-learn "
            f"C = 1/(2·N·reg) = {r['C']:.4f}.", "",
            "| | test acc (ours / sklearn) | weights, relative difference "
            "| objective (ours / sklearn) |",
            "|---|---|---|---|",
            f"| sigmoid + logistic vs `LogisticRegression` | {lg['test_acc_ours']:.4f} / "
            f"{lg['test_acc_sklearn']:.4f} | {lg['weight_rel_diff']:.1e} | "
            f"{lg['objective_ours']:.7f} / {lg['objective_sklearn']:.7f} |",
            f"| linear + hinge vs `LinearSVC(loss='hinge')` | {hg['test_acc_ours']:.4f} / "
            f"{hg['test_acc_sklearn']:.4f} | {hg['weight_rel_diff']:.1e} | "
            f"{hg['objective_ours']:.7f} / {hg['objective_sklearn']:.7f} |",
            f"| linear + hinge vs `SVC(kernel='linear')` (exact QP) | | "
            f"{hg['weight_rel_diff_vs_SVC_linear']:.1e} | {hg['objective_ours']:.7f} / "
            f"{hg['objective_SVC_linear']:.7f} |", "",
            "LinearSVC (liblinear) stops at a higher objective than the optimum, which both our "
            "solution and libsvm's exact QP reach; its weights differ from both by the same "
            "few percent. L2 as gradual forgetting: the penalty's part of each SGD step scales W "
            f"by 1 − {r['forgetting']['measured_decay_per_step']:.6f} "
            f"(= 2·lr·reg at lr {r['forgetting']['lr']}).", "",
            "![](experiments/results/single_neuron.png)", ""]

    r = load("capacity")
    out += ["### Capacity vs regularization (`capacity`)", "",
            "| hidden \\ reg | " + " | ".join(k.split("reg=")[1] for k in r["grid"]
                                            if k.startswith("h=3,")) + " |",
            "|---|---|---|---|"]
    for h in ("3", "6", "20"):
        out.append(f"| {h} | " + " | ".join(f"{v:.3f}" for k, v in r["grid"].items()
                                            if k.startswith(f"h={h},")) + " |")
    out += ["", "Train accuracy on the spiral. Capacity grows with width; regularization "
            "smooths the boundary, and at reg 0.1 (our `reg·ΣW²`; CS231n's ½λΣW² with λ = "
            "0.2) every width collapses to one class.", "",
            "Final loss over seeds (one vmapped `sweep` per width):", "",
            "| hidden | mean | std | min | max |", "|---|---|---|---|---|"]
    out += [f"| {h} | {v['mean']:.3f} | {v['std']:.3f} | {v['min']:.3f} | {v['max']:.3f} |"
            for h, v in r["spread"].items()]
    out += ["", "Small nets land in worse minima that vary with the seed; from 20 units on "
            "every seed converges to the same loss.", "",
            "![](experiments/results/capacity.png)", ""]

    r = load("universal")
    out += ["### Universal approximation (`universal`)", "",
            "`sin(3x) + 0.3x²` on [−2, 2], one tanh hidden layer.", "",
            "| hidden | " + " | ".join(map(str, r["widths"])) + " |",
            "|---|" + "---|" * len(r["widths"]),
            "| max abs error | " + " | ".join(f"{v:.4f}" for v in r["max_error"]) + " |", "",
            "![](experiments/results/universal.png)", ""]

    r = load("depth")
    out += ["### Depth at a matched parameter count (`depth`)", "",
            "| dataset | " + " | ".join(f"{d} layers" for d in r["digits"]) + " |",
            "|---|" + "---|" * len(r["digits"])]
    for ds, rows in r.items():
        out.append(f"| {ds} | " + " | ".join(f"{v['mean']:.4f} ({v['params']} p)"
                                              for v in rows.values()) + " |")
    out += ["", "Test accuracy at ~20 000 parameters (mean of 2 seeds). Past 2 layers "
            "(digits) or 3 (MNIST-1D) the accuracy falls: diminishing, then negative, "
            "returns for plain MLPs trained this way.", "",
            "![](experiments/results/depth.png)", "", END]
    return "\n".join(out)


if __name__ == "__main__":
    if "--run" in sys.argv:
        for name in SCRIPTS:
            print(f"== {name}", flush=True)
            subprocess.run([sys.executable, "-m", f"experiments.{name}"], cwd=ROOT, check=True)
    path = os.path.join(ROOT, "README.md")
    text = open(path).read()
    if START in text:
        head, rest = text.split(START, 1)
        text = head + section() + rest.split(END, 1)[1]
    else:
        anchor = "## Is my derivation right?"
        text = text.replace(anchor, section() + "\n\n" + anchor)
    with open(path, "w") as f:
        f.write(text)
    print(f"rewrote the experiments section of {path}")
