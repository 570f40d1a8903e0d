"""Depth at a matched parameter count: 1 to 6 weight layers on digits and MNIST-1D.

    python -m experiments.depth           # full (about 2 minutes)
    python -m experiments.depth --quick   # seconds

Every net with hidden layers gets one width for all of them, chosen so its parameter
count is as close as possible to BUDGET; depth 1 is the linear classifier (its size is
fixed). ReLU, He init, Adam with cosine decay, 2 seeds. Writes
experiments/results/depth.{json,png}.
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import (  # noqa: E402
    figure_path,
    param_count,
    quick_mode,
    width_for,
    write_json,
)
from mlp_jax import data, optim, train  # noqa: E402

QUICK = quick_mode()
DEPTHS = [1, 2, 3] if QUICK else [1, 2, 3, 4, 5, 6]
BUDGET = 20_000  # parameters
SEEDS = [0] if QUICK else [0, 1]
EPOCHS = {"digits": 3 if QUICK else 60, "mnist1d": 3 if QUICK else 60}


def main():
    results, loaders = {}, {"digits": data.digits, "mnist1d": data.mnist1d}
    if QUICK:
        loaders = {"digits": data.digits}
    for ds_name, loader in loaders.items():
        ds = loader()
        D, C = ds.X_train.shape[1], ds.num_classes
        results[ds_name] = {}
        for depth in DEPTHS:
            sizes = (D, *width_for(depth, D, C, BUDGET), C)
            spec = mj.MLPSpec(sizes, reg=1e-4)
            steps = EPOCHS[ds_name] * train.steps_per_epoch(len(ds.X_train), 64)
            accs = []
            for seed in SEEDS:
                r = train.fit(spec, ds, optim.adam(optim.cosine(1e-3, steps)),
                              epochs=EPOCHS[ds_name], batch_size=64, key=jax.random.key(seed),
                              eval_every=EPOCHS[ds_name], progress=False)
                accs.append(train.evaluate(r.state.params, ds.X_test, ds.y_test, spec)[1])
            results[ds_name][depth] = {"sizes": list(sizes), "params": param_count(sizes),
                                       "test_acc": accs, "mean": float(np.mean(accs))}
            print(f"{ds_name:>8} depth {depth}: sizes {sizes} ({param_count(sizes)} params) "
                  f"test acc {np.round(accs, 4).tolist()} mean {np.mean(accs):.4f}")
    print(f"wrote {write_json('depth', results, QUICK)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for ds_name, rows in results.items():
        ax.plot(DEPTHS, [rows[d]["mean"] for d in DEPTHS], "o-", label=ds_name)
    ax.set(xlabel="weight layers (1 = linear classifier)", ylabel="test accuracy",
           title=f"depth at ~{BUDGET} parameters")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure_path("depth", QUICK), dpi=90)


def readme(r: dict) -> list[str]:
    """This experiment's README block, from its JSON."""
    out = ["### Depth at a matched parameter count (`depth`)", "",
           "| dataset | " + " | ".join(f"{d} layers" for d in r["digits"]) + " |",
           "|---|" + "---|" * len(r["digits"])]
    for ds, rows in r.items():
        out.append(f"| {ds} | " + " | ".join(f"{v['mean']:.4f} ({v['params']} p)"
                                              for v in rows.values()) + " |")
    budget = f"{BUDGET:,}".replace(",", " ")
    return out + ["", f"Test accuracy at ~{budget} parameters (mean of {len(SEEDS)} seeds). "
                  + depth_sentence(r)]


def depth_sentence(r: dict) -> str:
    """Where accuracy peaks with depth, and whether every deeper net is worse."""
    parts = []
    for ds, rows in r.items():
        depths = list(rows)
        accs = [rows[d]["mean"] for d in depths]
        best = max(range(len(accs)), key=accs.__getitem__)
        after = accs[best + 1:]
        if after and all(a < accs[best] for a in after):
            parts.append(f"on {ds} accuracy peaks at {depths[best]} layers ({accs[best]:.3f}) "
                         f"and every deeper net is worse (down to {min(after):.3f})")
        elif after:
            parts.append(f"on {ds} accuracy peaks at {depths[best]} layers ({accs[best]:.3f}), "
                         "not every deeper net is worse")
        else:
            parts.append(f"on {ds} accuracy is best at the deepest net tried "
                         f"({depths[best]} layers, {accs[best]:.3f})")
    falls = all("every deeper net is worse" in p for p in parts)
    text = "; ".join(parts)
    return (text[0].upper() + text[1:] + "."
            + (" Diminishing, then negative, returns for plain MLPs trained this way."
               if falls else ""))


if __name__ == "__main__":
    main()
