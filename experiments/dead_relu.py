"""Dead ReLUs: the fraction of hidden units that never fire over a whole epoch, against the
learning rate; leaky ReLU and maxout as the remedy (digits, one hidden layer of 200, SGD).

    python -m experiments.dead_relu           # full (about 1 minute)
    python -m experiments.dead_relu --quick   # seconds

A unit is dead when its activation's derivative is 0 on every training example
(diagnostics.unit_stats): a ReLU can die, a leaky ReLU or maxout unit cannot. Two inputs:
the pixels scaled to [0, 1] (all positive, as raw images are), where large updates knock
units out, and standardized (zero-centred) pixels, where, as measured here, none die.
Writes experiments/results/dead_relu.{json,png}.
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import figure_path, quick_mode, write_json  # noqa: E402
from mlp_jax import data, diagnostics, optim, train  # noqa: E402

QUICK = quick_mode()
LRS = [0.01, 1.0, 3.0] if QUICK else [0.01, 0.03, 0.1, 0.3, 1.0, 2.0, 3.0]
EPOCHS = 3 if QUICK else 10
HIDDEN = 200


def main():
    from sklearn.datasets import load_digits

    raw = load_digits()
    (_, _), (Xt, yt), (Xtr, ytr) = data.split(raw.data, raw.target.astype(np.int32), [0.15, 0.2], 0)
    inputs = {
        "pixels in [0, 1]": data.Dataset("digits/16", (Xtr / 16).astype(np.float32), ytr, None,
                                         None, (Xt / 16).astype(np.float32), yt, 10),
        "standardized": data.digits(),
    }
    results = {"lrs": LRS, "epochs": EPOCHS}
    for input_name, ds in inputs.items():
        for act in ("relu", "leaky_relu", "maxout"):
            if input_name == "standardized" and act != "relu":
                continue
            spec = mj.MLPSpec((64, HIDDEN, 10), activation=act, reg=1e-4)
            p0 = mj.init_params(jax.random.split(jax.random.key(0))[0], spec)  # fit's own init
            at_init = diagnostics.unit_stats(p0, ds.X_train, spec)[0]["dead"]
            dead, acc = [], []
            for lr in LRS:
                try:
                    r = train.fit(spec, ds, optim.sgd(lr), epochs=EPOCHS, batch_size=32,
                                  key=jax.random.key(0), eval_every=EPOCHS, progress=False)
                except train.TrainingDiverged:
                    dead.append(None)
                    acc.append(None)
                    continue
                dead.append(diagnostics.unit_stats(r.state.params, ds.X_train, spec)[0]["dead"])
                acc.append(train.evaluate(r.state.params, ds.X_test, ds.y_test, spec)[1])
            key = f"{act} ({input_name})"
            results[key] = {"dead_at_init": at_init, "dead_fraction": dead, "test_acc": acc}
            fmt = lambda v: "diverged" if v is None else f"{v:.3f}"  # noqa: E731
            print(f"{key:>30}: dead at init {at_init:.3f}; after {EPOCHS} epochs, by lr: "
                  + ", ".join(f"{lr}: {fmt(d)} (acc {fmt(a)})" for lr, d, a in zip(LRS, dead, acc)))
    print(f"wrote {write_json('dead_relu', results, QUICK)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, r in results.items():
        if not isinstance(r, dict):
            continue
        pts = [(lr, d, a) for lr, d, a in zip(LRS, r["dead_fraction"], r["test_acc"])
               if d is not None]
        ax1.semilogx([p[0] for p in pts], [p[1] for p in pts], "o-", label=key)
        ax2.semilogx([p[0] for p in pts], [p[2] for p in pts], "o-", label=key)
    ax1.set(xlabel="learning rate (SGD)", ylabel="fraction of hidden units dead",
            title=f"units that never fire over an epoch, after {EPOCHS} epochs")
    ax2.set(xlabel="learning rate (SGD)", ylabel="test accuracy", title="digits")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure_path("dead_relu", QUICK), dpi=90)


def readme(r: dict) -> list[str]:
    """This experiment's README block, from its JSON."""
    out = ["### Dead ReLUs (`dead_relu`)", "",
           f"Fraction of the {HIDDEN} hidden units that never fire over the training set, "
           f"after {r['epochs']} epochs of SGD, by learning rate (digits).", "",
           "| net (input) | at init | " + " | ".join(f"lr {lr}" for lr in r["lrs"]) + " |",
           "|---|---|" + "---|" * len(r["lrs"])]
    for k, v in r.items():
        if isinstance(v, dict):
            cells = ["diverged" if d is None else f"{d:.3f}" for d in v["dead_fraction"]]
            out.append(f"| {k} | {v['dead_at_init']:.3f} | " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    main()
