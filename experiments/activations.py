"""Activation functions compared, all of them, on the spiral, digits and MNIST-1D: final
train/test accuracy, and steps to reach a target training loss, with training curves.

    python -m experiments.activations           # full (about 2 minutes)
    python -m experiments.activations --quick   # seconds

Same architecture, init rule, optimizer (SGD + momentum 0.9) and learning rate for every
activation on a dataset. The lectures cite ~6x faster convergence for ReLU than tanh (a
CIFAR-10 convnet, Krizhevsky et al. 2012); the ReLU/tanh steps-to-target ratio here is what
these MLPs show. Writes experiments/results/activations.{json,png}.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import f3, figure_path, quick_mode, write_json  # noqa: E402
from mlp_jax import data, optim, train  # noqa: E402

QUICK = quick_mode()
ACTS = ["relu", "tanh"] if QUICK else list(mj.ACTIVATION_NAMES)
# dataset: (loader, hidden sizes, lr, batch size, epochs, target training loss)
SETUPS = {
    "spiral": (data.spiral, (100,), 0.1, 300, 300 if QUICK else 5_000, 0.5),
    "digits": (data.digits, (100,), 0.01, 64, 3 if QUICK else 40, 0.1),
    "mnist1d": (data.mnist1d, (100, 100), 0.01, 100, 3 if QUICK else 60, 0.5),
}
if QUICK:
    SETUPS = {"spiral": SETUPS["spiral"]}


def main():
    results, curves = {}, {}
    for ds_name, (loader, hidden, lr, bs, epochs, target) in SETUPS.items():
        ds = loader()
        per_epoch = train.steps_per_epoch(len(ds.X_train), bs)
        results[ds_name] = {"target_loss": target, "lr": lr, "epochs": epochs}
        for act in ACTS:
            init = "xavier" if act in ("sigmoid", "tanh", "identity") else "he"
            spec = mj.MLPSpec((ds.X_train.shape[1], *hidden, ds.num_classes), activation=act,
                              init=init, reg=1e-4)
            opt = optim.momentum(lr, 0.9)
            state = train.init_state(jax.random.key(0), spec, opt)
            state, losses = train.make_epochs(spec, opt, bs, epochs)(
                state, jnp.asarray(ds.X_train), jnp.asarray(ds.y_train))
            epoch_loss = np.asarray(losses).mean(axis=1)  # (epochs,)
            hit = np.nonzero(epoch_loss <= target)[0]
            steps = int((hit[0] + 1) * per_epoch) if hit.size else None
            row = {"steps_to_target": steps,
                   "train_acc": train.evaluate(state.params, ds.X_train, ds.y_train, spec)[1]}
            if ds.X_test is not None:
                row["test_acc"] = train.evaluate(state.params, ds.X_test, ds.y_test, spec)[1]
            results[ds_name][act] = row
            curves[(ds_name, act)] = epoch_loss
            print(f"{ds_name:>8} {act:>10}: steps to loss {target}: {steps}; train acc "
                  f"{row['train_acc']:.3f}" + (f", test acc {row['test_acc']:.3f}"
                                               if "test_acc" in row else ""))
        r, t = (results[ds_name][a]["steps_to_target"] for a in ("relu", "tanh"))
        ratio = t / r if r and t else None
        results[ds_name]["tanh_over_relu_steps"] = ratio
        print(f"{ds_name}: tanh needs {ratio if ratio is None else round(ratio, 2)}x the steps of "
              "ReLU to reach the target (lectures: ~6x, for a CIFAR-10 convnet)")
    print(f"wrote {write_json('activations', results, QUICK)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETUPS), figsize=(5.5 * len(SETUPS), 4), squeeze=False)
    for ax, ds_name in zip(axes[0], SETUPS):
        for act in ACTS:
            ax.semilogy(curves[(ds_name, act)], label=act)
        ax.axhline(results[ds_name]["target_loss"], color="k", ls=":", lw=1)
        ax.set(title=ds_name, xlabel="epoch (spiral: step)", ylabel="training loss")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(figure_path("activations", QUICK), dpi=90)


def readme(r: dict) -> list[str]:
    """This experiment's README block, from its JSON."""
    acts = [k for k in r["spiral"] if isinstance(r["spiral"][k], dict)]
    out = ["### Activation functions compared (`activations`)", "",
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
    return out + ["", f"tanh/ReLU steps-to-target ratio: {ratios}. The lectures cite ~6× for "
                  f"a CIFAR-10 convnet; {gap_sentence(r)}."]


def gap_sentence(r: dict) -> str:
    """Which datasets show a tanh/ReLU gap of at least the lectures' ~6x."""
    ratio = {d: r[d]["tanh_over_relu_steps"] for d in r}
    groups = {"at least as large": [d for d, v in ratio.items() if v is not None and v >= 6],
              "smaller": [d for d, v in ratio.items() if v is not None and v < 6],
              "not measured (a net never reached the target)":
                  [d for d, v in ratio.items() if v is None]}
    return "here the gap is " + "; ".join(f"{k} on {', '.join(v)}" for k, v in groups.items()
                                          if v)


if __name__ == "__main__":
    main()
