"""Saturation and vanishing gradients: per-layer gradient norms in 8-layer sigmoid, tanh
and ReLU nets, at initialization and during training (digits).

    python -m experiments.saturation           # full (about 40 s)
    python -m experiments.saturation --quick   # seconds

Uses diagnostics.Diagnostics as the fit callback (gradient norms, update/weight ratios,
dead and saturated fractions per layer). Writes experiments/results/saturation.{json,png}.
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
DEPTH = 8  # weight layers
WIDTH = 64
EPOCHS = 4 if QUICK else 40
LR = 0.05  # SGD
ACTIVATIONS = {"sigmoid": "xavier", "tanh": "xavier", "relu": "he"}  # each with its usual init


def main():
    ds = data.digits()
    probe_x, probe_y = ds.X_train[:500], ds.y_train[:500]
    results, rows = {}, {}
    for act, init in ACTIVATIONS.items():
        spec = mj.MLPSpec((64, *[WIDTH] * (DEPTH - 1), 10), activation=act, init=init, reg=1e-4)
        opt = optim.sgd(LR)
        state = train.init_state(jax.random.key(0), spec, opt)
        at_init = diagnostics.per_layer_grad_norms(state.params, probe_x, probe_y, spec)
        cb = diagnostics.Diagnostics(spec, opt, probe_x, probe_y)
        r = train.fit(spec, ds, opt, epochs=EPOCHS, batch_size=64, eval_every=max(EPOCHS // 10, 1),
                      state=state, progress=False, callbacks=[cb])
        acc = train.evaluate(r.state.params, ds.X_test, ds.y_test, spec)[1]
        ratio = float(at_init[0] / at_init[-1])
        results[act] = {"grad_norm_at_init": at_init.tolist(), "layer1_over_last_at_init": ratio,
                        "history_grad_norm": [h["grad_norm"] for h in r.history],
                        "saturated_final": r.history[-1]["saturated"],
                        "update_ratio_final": r.history[-1]["update_ratio"], "test_acc": acc}
        rows[act] = r.history
        print(f"{act:>8}: ||dW1|| / ||dW{DEPTH}|| at init = {ratio:.2e}; after {EPOCHS} epochs of "
              f"SGD test acc {acc:.3f}; update/weight ratios "
              f"{np.round(r.history[-1]['update_ratio'], 4).tolist()}")
    print(f"wrote {write_json('saturation', results, QUICK)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(rows), figsize=(4.2 * (1 + len(rows)), 3.8))
    for act in rows:
        axes[0].semilogy(range(1, DEPTH + 1), results[act]["grad_norm_at_init"], "o-", label=act)
    axes[0].set(xlabel="layer", ylabel="||dW||", title="gradient norm per layer at init")
    axes[0].legend()
    for ax, (act, hist) in zip(axes[1:], rows.items()):
        norms = np.array([h["grad_norm"] for h in hist])  # (evals, layers)
        for layer in range(DEPTH):
            ax.semilogy([h["epoch"] for h in hist], norms[:, layer],
                        color=plt.cm.viridis(layer / (DEPTH - 1)),
                        label=f"layer {layer + 1}" if layer in (0, DEPTH - 1) else None)
        ax.set(xlabel="epoch", title=f"{act}: ||dW|| during training")
        ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure_path("saturation", QUICK), dpi=90)


def readme(r: dict) -> list[str]:
    """This experiment's README block, from its JSON."""
    out = ["### Saturation and vanishing gradients (`saturation`)", "",
           f"{DEPTH}-layer nets on digits, SGD lr {LR}; gradient norms from `diagnostics`.", "",
           f"| activation (init) | ‖dW1‖/‖dW{DEPTH}‖ at init | test acc after training |",
           "|---|---|---|"]
    return out + [f"| {a} | {v['layer1_over_last_at_init']:.2e} | {v['test_acc']:.3f} |"
                  for a, v in r.items()]


if __name__ == "__main__":
    main()
