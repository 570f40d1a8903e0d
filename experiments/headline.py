"""Headline figures: the CS231n spiral case study, digits and MNIST-1D, each against a linear
classifier.

    python -m experiments.headline           # full (about 2 minutes on 2 cores)
    python -m experiments.headline --quick   # seconds; what the tests run

Writes experiments/results/headline.json and headline.png.
"""

import dataclasses
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import figure_path, quick_mode, write_json  # noqa: E402
from mlp_jax import data, optim, train  # noqa: E402

QUICK = quick_mode()
# Spiral, as in the case study: full-batch SGD, lr 1.0, H = 100, W = 0.01 * randn.
# The case study's penalty is 0.5 * reg * sum(W**2) with reg = 1e-3; ours is
# reg * sum(W**2), so the same penalty is our reg = 5e-4.
SPIRAL_STEPS = 500 if QUICK else 10_000
SPIRAL_REG = 0.5 * 1e-3
SPIRAL_LINEAR_STEPS = 200  # the case study trains the linear classifier for 200 steps
SPIRAL_SEEDS = [0] if QUICK else [0, 1, 2]  # the final loss's spread, and reg 1e-3 beside it
# Digits: ReLU 256, dropout 0.2, input noise 0.2, Adam with cosine decay, 100 epochs.
DIGITS_EPOCHS = 10 if QUICK else 100
DIGITS_GOAL = 0.97  # test accuracy
# MNIST-1D: the paper's table (4000 train / 1000 test); a 40-100-100-10 ReLU net, Adam at
# the paper's lr 1e-2, batch 100; plain, and with dropout 0.2.
MNIST1D_EPOCHS = 5 if QUICK else 150
SEEDS = [0] if QUICK else [0, 1, 2, 3]


def run(spec, ds, opt, epochs, batch_size, seed, eval_every=None):
    r = train.fit(spec, ds, opt, epochs=epochs, batch_size=batch_size, key=jax.random.key(seed),
                  eval_every=eval_every or epochs, progress=False)
    out = dict(zip(("train_loss", "train_acc"),
                   train.evaluate(r.state.params, ds.X_train, ds.y_train, spec)))
    if ds.X_test is not None:
        out["test_acc"] = train.evaluate(r.state.params, ds.X_test, ds.y_test, spec)[1]
        out["test_acc_best_val"] = train.evaluate(r.best_params, ds.X_test, ds.y_test, spec)[1]
    return out, r.history


def main():
    results, curves = {}, {}
    t0 = time.perf_counter()

    spiral = data.spiral()
    two_layer = mj.MLPSpec((2, 100, 3), activation="relu", reg=SPIRAL_REG, init="normal",
                           weight_scale=0.01)
    linear = mj.MLPSpec((2, 3), reg=SPIRAL_REG, init="normal", weight_scale=0.01)
    results["spiral_2layer"], curves["spiral 2-layer ReLU"] = run(
        two_layer, spiral, optim.sgd(1.0), SPIRAL_STEPS, 300, 0, eval_every=SPIRAL_STEPS // 20)
    results["spiral_linear"], curves["spiral linear"] = run(
        linear, spiral, optim.sgd(1.0), SPIRAL_LINEAR_STEPS, 300, 0, eval_every=10)
    for reg in (SPIRAL_REG, 1e-3):  # the case study's penalty, and twice it (our reg 1e-3)
        spec = dataclasses.replace(two_layer, reg=reg)
        seeds = [run(spec, spiral, optim.sgd(1.0), SPIRAL_STEPS, 300, s)[0] for s in SPIRAL_SEEDS]
        results[f"spiral_2layer_reg{reg:g}_seeds"] = {
            "seeds": SPIRAL_SEEDS, "train_loss": [r["train_loss"] for r in seeds],
            "train_acc": [r["train_acc"] for r in seeds]}
    print(f"spiral: 2-layer ReLU train acc {results['spiral_2layer']['train_acc']:.4f} "
          f"(case study 0.98), linear {results['spiral_linear']['train_acc']:.4f} (0.49)")

    digits = data.digits()
    spec = mj.MLPSpec((64, 256, 10), reg=1e-3, dropout=0.2, input_noise=0.2)
    steps = DIGITS_EPOCHS * train.steps_per_epoch(len(digits.X_train), 64)
    runs = [run(spec, digits, optim.adam(optim.cosine(1e-3, steps)), DIGITS_EPOCHS, 64, s,
                eval_every=max(DIGITS_EPOCHS // 20, 1)) for s in SEEDS]
    accs = [r[0]["test_acc"] for r in runs]
    curves["digits MLP"] = runs[0][1]
    results["digits_mlp"] = {
        "test_acc_per_seed": accs, "test_acc_mean": float(np.mean(accs)),
        "test_acc_best_val_per_seed": [r[0]["test_acc_best_val"] for r in runs],
        "val_size": len(digits.X_val)}
    lin = [run(mj.MLPSpec((64, 10), reg=1e-3), digits, optim.adam(1e-2), DIGITS_EPOCHS, 64, s)[0]
           ["test_acc"] for s in SEEDS]
    results["digits_linear"] = {"test_acc_mean": float(np.mean(lin))}
    print(f"digits: MLP test acc {np.round(accs, 4)} (mean {np.mean(accs):.4f}); "
          f"linear {np.mean(lin):.4f}")

    m1 = data.mnist1d()
    for name, p in (("mnist1d_mlp", 0.0), ("mnist1d_mlp_dropout", 0.2)):
        spec = mj.MLPSpec((40, 100, 100, 10), dropout=p)
        runs = [run(spec, m1, optim.adam(1e-2), MNIST1D_EPOCHS, 100, s,
                    eval_every=max(MNIST1D_EPOCHS // 15, 1)) for s in SEEDS]
        accs = [r[0]["test_acc"] for r in runs]
        curves[f"MNIST-1D MLP{' + dropout' if p else ''}"] = runs[0][1]
        results[name] = {"test_acc_per_seed": accs, "test_acc_mean": float(np.mean(accs))}
        print(f"mnist1d: MLP{' + dropout 0.2' if p else ''} test acc {np.round(accs, 4)} "
              f"(mean {np.mean(accs):.4f}; paper ~0.68)")
    lin = [run(mj.MLPSpec((40, 10)), m1, optim.adam(1e-2), MNIST1D_EPOCHS, 100, s)[0]["test_acc"]
           for s in SEEDS]
    results["mnist1d_linear"] = {"test_acc_mean": float(np.mean(lin))}
    print(f"mnist1d: linear test acc {np.mean(lin):.4f} (paper ~0.32)")
    results["seconds"] = time.perf_counter() - t0
    print(f"wrote {write_json('headline', results, QUICK)} ({results['seconds']:.0f} s)")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit(0)
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.5))
    for ax, (name, hist) in zip(axes, curves.items()):
        ax.plot([h["epoch"] for h in hist], [h["train_acc"] for h in hist], label="train acc")
        ax.set(title=name, xlabel="epoch (spiral: step)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(figure_path("headline", QUICK), dpi=90)


def readme(h: dict) -> list[str]:
    """The README's Results table, from this experiment's JSON."""

    def seeds(v):
        return " (" + ", ".join(f"{a:.4f}" for a in v["test_acc_per_seed"]) + ")"

    digits = h["digits_mlp"]
    over = sum(a >= DIGITS_GOAL for a in digits["test_acc_per_seed"])
    n = len(digits["test_acc_per_seed"])
    mark = "**" if digits["test_acc_mean"] >= DIGITS_GOAL else ""
    spiral_steps = f"{SPIRAL_STEPS:,}".replace(",", " ")
    rows = [
        (f"spiral, 2-layer ReLU, H=100, full-batch SGD lr 1.0, {spiral_steps} steps (train "
         "acc)",
         f"**{h['spiral_2layer']['train_acc']:.4f}**", "0.98 (CS231n case study)"),
        (f"spiral, linear classifier, {SPIRAL_LINEAR_STEPS} steps (train acc)",
         f"{h['spiral_linear']['train_acc']:.4f}", "0.49 (case study)"),
        ("digits, 64-256-10 ReLU, dropout 0.2, input noise 0.2, Adam + cosine, "
         f"{DIGITS_EPOCHS} epochs (test acc)",
         f"{mark}{digits['test_acc_mean']:.4f}{mark} mean{seeds(digits)}",
         f"goal ≥ {DIGITS_GOAL}"),
        ("digits, linear classifier (test acc)", f"{h['digits_linear']['test_acc_mean']:.4f}",
         ""),
        (f"MNIST-1D, 40-100-100-10 ReLU, Adam lr 1e-2, {MNIST1D_EPOCHS} epochs (test acc)",
         f"{h['mnist1d_mlp']['test_acc_mean']:.4f}{seeds(h['mnist1d_mlp'])}",
         "~0.68 (MNIST-1D paper)"),
        ("MNIST-1D, same + dropout 0.2 (test acc)",
         f"{h['mnist1d_mlp_dropout']['test_acc_mean']:.4f}{seeds(h['mnist1d_mlp_dropout'])}",
         ""),
        ("MNIST-1D, linear classifier (test acc)",
         f"{h['mnist1d_linear']['test_acc_mean']:.4f}", "~0.32 (paper)"),
    ]
    out = [f"Regenerate with `python -m experiments.headline` ({h['seconds']:.0f} s on 2 "
           "cores) and `python -m experiments.report`. Accuracies of the final params; "
           f"{n} seeds where several are listed.", "",
           "| experiment | mlp_jax | reference |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out += ["", f"Digits: {over} of {n} seeds reach {DIGITS_GOAL} (mean "
            f"{digits['test_acc_mean']:.4f}).", ""]
    return out + notes(h)


def span(values, fmt=".3f") -> str:
    """'a' when all values round alike, else 'min–max'."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def notes(h) -> list[str]:
    """The notes under the Results table, each from headline.json."""
    half, full = h["spiral_2layer_reg0.0005_seeds"], h["spiral_2layer_reg0.001_seeds"]
    digits = h["digits_mlp"]
    final, best = digits["test_acc_per_seed"], digits["test_acc_best_val_per_seed"]
    worse = sum(b < f for b, f in zip(best, final))
    return [
        "Notes on these numbers:",
        "* The case study's penalty is `0.5 · reg · ΣW²` with reg 1e-3. Ours is `reg · ΣW²`, "
        "so the same penalty is our reg 5e-4, used here. With it the final loss "
        f"(data + penalty) is {span(half['train_loss'])} over {len(half['seeds'])} seeds (the "
        "case study's last printed loss: 0.245) and the training accuracy "
        f"{span(half['train_acc'], '.4f')}. With our reg 1e-3 (twice the case study's "
        f"penalty) the final loss is {span(full['train_loss'])} and the accuracy "
        f"{span(full['train_acc'], '.4f')}.",
        "* Digits: the table reports the final (cosine-annealed) params. The params best on "
        f"the {digits['val_size']}-image validation split scored {span(best, '.4f')} on "
        f"test; lower than the final params for {worse} of {len(final)} seeds. "
        "`mlp-jax train` prints both.",
    ]


if __name__ == "__main__":
    main()
