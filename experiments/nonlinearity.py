"""Why the nonlinearity: a stack of linear layers is one matrix, and learns no more.

    python -m experiments.nonlinearity           # full (about 20 s)
    python -m experiments.nonlinearity --quick   # seconds

1. A 3-layer identity-activation net equals one linear map W = W3 W2 W1 (and one bias),
   shown in float64.
2. On the spiral, that deep linear net reaches what the linear classifier reaches;
   the ReLU net fits it (>= 0.98, as in the CS231n case study).
Writes experiments/results/nonlinearity.{json,png}.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import figure_path, quick_mode, write_json  # noqa: E402
from mlp_jax import data, optim, train  # noqa: E402

QUICK = quick_mode()
STEPS = 1_000 if QUICK else 10_000  # full-batch SGD steps, lr 1.0, as in the case study
REG = 5e-4  # the case study's 0.5 * 1e-3 * sum W^2 in our convention (see README)


def main():
    # 1. Collapse, in float64.
    with jax.enable_x64(True):
        spec = mj.MLPSpec((5, 7, 6, 4), activation="identity", dtype="float64")
        p = mj.init_params(jax.random.key(0), spec)
        p = tuple(dict(layer, b=jax.random.normal(jax.random.key(i), layer["b"].shape))
                  for i, layer in enumerate(p))
        W = p[2]["W"] @ p[1]["W"] @ p[0]["W"]  # (4, 5)
        b = p[2]["W"] @ (p[1]["W"] @ p[0]["b"] + p[1]["b"]) + p[2]["b"]
        x = jax.random.normal(jax.random.key(9), (100, 5))
        deep, one = mj.forward(p, x, spec), x @ W.T + b
        collapse_error = float(jnp.max(jnp.abs(deep - one)) / jnp.max(jnp.abs(one)))
    print(f"3-layer linear net vs the single matrix W3 W2 W1: max relative difference "
          f"{collapse_error:.1e}")

    # 2. Spiral: linear classifier, deep linear net, ReLU net.
    ds = data.spiral()
    nets = {"linear classifier (2-3)": mj.MLPSpec((2, 3), reg=REG),
            "3-layer linear net (2-100-100-3)": mj.MLPSpec((2, 100, 100, 3), activation="identity",
                                                           reg=REG, init="xavier"),
            "2-layer ReLU net (2-100-3)": mj.MLPSpec((2, 100, 3), reg=REG, init="normal",
                                                     weight_scale=0.01)}
    lrs = {"3-layer linear net (2-100-100-3)": 0.1}  # lr 1.0 diverges for the deep linear net
    results = {"collapse_max_rel_diff_float64": collapse_error, "steps": STEPS}
    curves = {}
    for name, spec in nets.items():
        r = train.fit(spec, ds, optim.sgd(lrs.get(name, 1.0)), epochs=STEPS, batch_size=300,
                      key=jax.random.key(0), eval_every=STEPS // 20, progress=False)
        acc = train.evaluate(r.state.params, ds.X_train, ds.y_train, spec)[1]
        results[name] = acc
        curves[name] = (r.history, r.state.params, spec)
        print(f"{name}: train accuracy {acc:.4f}")
    print(f"wrote {write_json('nonlinearity', results, QUICK)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    g = np.linspace(-1.1, 1.1, 200)
    xx, yy = np.meshgrid(g, g)
    grid = np.c_[xx.ravel(), yy.ravel()].astype(np.float32)
    for ax, (name, (_, params, spec)) in zip(axes, curves.items()):
        pred = np.asarray(jnp.argmax(mj.forward(params, grid, spec), 1)).reshape(xx.shape)
        ax.contourf(xx, yy, pred, alpha=0.3, levels=[-0.5, 0.5, 1.5, 2.5], cmap="brg")
        ax.scatter(ds.X_train[:, 0], ds.X_train[:, 1], c=ds.y_train, s=8, cmap="brg")
        ax.set(title=f"{name}\ntrain acc {results[name]:.3f}", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(figure_path("nonlinearity", QUICK), dpi=90)


def readme(r: dict) -> list[str]:
    """This experiment's README block, from its JSON."""
    out = ["### Why the nonlinearity (`nonlinearity`)", "",
           f"A 3-layer identity-activation net equals the single map `W3 W2 W1` to "
           f"{r['collapse_max_rel_diff_float64']:.1e} (float64), and on the spiral learns "
           "no more:", "",
           "| net | spiral train acc |", "|---|---|"]
    return out + [f"| {k} | {v:.4f} |" for k, v in r.items() if k.endswith(")")]


if __name__ == "__main__":
    main()
