"""Does normalization rescue the deep nets that fail? The saturation experiment's 8-layer
sigmoid net and the depth experiment's 4-6-layer nets, each without a norm, with batch
norm and with layer norm, on the same budget (same data, optimizer, epochs, batch,
seeds; MNIST-1D with 10% of its training split held out for validation).

    python -m experiments.normalization           # full (about 5 minutes on 2 cores)
    python -m experiments.normalization --quick   # seconds

Reports each net's final test accuracy (batch norm evaluated by its running statistics)
and the updates it took to first reach a validation-accuracy target (evaluated every
epoch, so to the nearest epoch; None: never reached). Writes
experiments/results/normalization.{json,png}.
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import figure_path, quick_mode, width_for, write_json  # noqa: E402
from mlp_jax import data, network, optim, train  # noqa: E402

QUICK = quick_mode()
NORMS = [None, "batchnorm", "layernorm"]
SEEDS = [0] if QUICK else [0, 1]
BATCH = 64
# The saturation experiment: 8 weight layers of 64 sigmoid units, Xavier, SGD 0.05.
SAT_SIZES = (64, *[64] * 7, 10)
SAT_LR = 0.05
SAT_EPOCHS = 2 if QUICK else 40
# The depth experiment: ~20 000 parameters, ReLU, He, Adam with cosine decay.
DEPTHS = [4] if QUICK else [4, 5, 6]
DEPTH_EPOCHS = 2 if QUICK else 60
BUDGET = 20_000
TARGETS = {"digits": 0.95, "mnist1d": 0.55, "saturation": 0.90}  # validation accuracy


def run(spec, ds, make_opt, epochs, target, curves=False):
    """Every seed of one net: final test accuracy, updates to the target, and (``curves``)
    the validation curve, which the figure draws for the sigmoid nets."""
    out = {"test_acc": [], "steps_to_target": []} | ({"curves": []} if curves else {})
    for seed in SEEDS:
        r = train.fit(spec, ds, make_opt(), epochs=epochs, batch_size=BATCH,
                      key=jax.random.key(seed), eval_every=1, progress=False)
        out["test_acc"].append(train.evaluate(r.state.params, ds.X_test, ds.y_test, spec,
                                              stats=r.state.stats)[1])
        out["steps_to_target"].append(next((h["step"] for h in r.history
                                            if h["val_acc"] >= target), None))
        if curves:
            out["curves"].append([[h["step"], h["val_acc"]] for h in r.history])
    out["mean"] = float(np.mean(out["test_acc"]))
    return out


def label(norm):
    return norm or "none"


def main():
    results = {"targets": TARGETS, "seeds": SEEDS, "saturation": {}, "depth": {}}
    digits = data.digits()
    # Where the plain sigmoid net's signal is at init, layer by layer (500 training examples):
    # the spread between examples (each unit's std over the batch: what batch norm divides by)
    # and within an example (its std over the units: what layer norm divides by).
    plain = mj.MLPSpec(SAT_SIZES, activation="sigmoid", init="xavier")
    _, cache = network.forward_with_cache(mj.init_params(jax.random.key(0), plain),
                                          digits.X_train[:500], plain)
    zs = [np.asarray(entry["z"]) for entry in cache[:-1]]
    results["spread_at_init"] = {"between_examples": [float(z.std(0).mean()) for z in zs],
                                 "within_example": [float(z.std(1).mean()) for z in zs]}
    print("pre-activation spread at init, layer 1..7: between examples "
          f"{np.round(results['spread_at_init']['between_examples'], 4).tolist()}, within an "
          f"example {np.round(results['spread_at_init']['within_example'], 3).tolist()}")
    for norm in NORMS:
        spec = mj.MLPSpec(SAT_SIZES, activation="sigmoid", init="xavier", reg=1e-4, norm=norm)
        r = run(spec, digits, lambda: optim.sgd(SAT_LR), SAT_EPOCHS, TARGETS["saturation"],
                curves=True)
        results["saturation"][label(norm)] = r
        print(f"{len(SAT_SIZES) - 1}-layer sigmoid, {label(norm):>9}: test acc "
              f"{np.round(r['test_acc'], 4).tolist()}, updates to val acc "
              f"{TARGETS['saturation']}: {r['steps_to_target']}", flush=True)

    # MNIST-1D has no validation split of its own: 10% of its training split is held out
    loaders = {"digits": lambda: digits} if QUICK else {
        "digits": lambda: digits, "mnist1d": lambda: data.mnist1d(val_fraction=0.1)}
    for ds_name, loader in loaders.items():
        ds = loader()
        D, C = ds.X_train.shape[1], ds.num_classes
        steps = DEPTH_EPOCHS * train.steps_per_epoch(len(ds.X_train), BATCH)
        results["depth"][ds_name] = {}
        for depth in DEPTHS:
            sizes = (D, *width_for(depth, D, C, BUDGET), C)
            row = results["depth"][ds_name][str(depth)] = {"sizes": list(sizes)}
            for norm in NORMS:
                spec = mj.MLPSpec(sizes, reg=1e-4, norm=norm)
                r = run(spec, ds, lambda steps=steps: optim.adam(optim.cosine(1e-3, steps)),
                        DEPTH_EPOCHS, TARGETS[ds_name])
                row[label(norm)] = r
                print(f"{ds_name:>8} depth {depth} {sizes}, {label(norm):>9}: test acc "
                      f"{np.round(r['test_acc'], 4).tolist()}, updates to val acc "
                      f"{TARGETS[ds_name]}: {r['steps_to_target']}", flush=True)
    print(f"wrote {write_json('normalization', results, QUICK)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [label(n) for n in NORMS]
    fig, axes = plt.subplots(1, 1 + len(results["depth"]),
                             figsize=(4.8 * (1 + len(results["depth"])), 4.0))
    for name in names:
        steps_, accs = np.array(results["saturation"][name]["curves"][0]).T
        axes[0].plot(steps_, accs, label=name)
    axes[0].axhline(TARGETS["saturation"], color="gray", ls=":", lw=1)
    axes[0].set(xlabel="update", ylabel="validation accuracy (seed 0)", ylim=(0, 1),
                title="8-layer sigmoid net, SGD (digits)")
    axes[0].legend(title="norm")
    width = 0.8 / len(names)
    for ax, (ds_name, rows) in zip(axes[1:], results["depth"].items()):
        for i, name in enumerate(names):
            ax.bar(np.arange(len(rows)) + (i - 1) * width, [rows[d][name]["mean"] for d in rows],
                   width, label=name)
        ax.set_xticks(range(len(rows)), [f"{d} layers" for d in rows])
        lo = min(rows[d][n]["mean"] for d in rows for n in names)
        ax.set(ylabel="test accuracy (mean of seeds)", ylim=(max(0.0, lo - 0.1), None),
               title=f"{ds_name}: ReLU, ~{BUDGET} params, Adam")
        ax.legend(title="norm", loc="lower left", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure_path("normalization", QUICK), dpi=90)


def readme(r: dict) -> list[str]:
    """This experiment's README block, from its JSON."""
    names = [label(n) for n in NORMS]
    t = r["targets"]
    out = ["### Does normalization rescue deep nets? (`normalization`)", "",
           "The saturation experiment's net and the depth experiment's 4–6-layer nets, each "
           "without a norm, with batch norm and with layer norm, on the same budget. Each "
           "cell: final test accuracy (mean of seeds "
           f"{', '.join(map(str, r['seeds']))}) and, in brackets, the updates each seed took "
           "to first reach the validation-accuracy target (to the nearest epoch; – never).",
           "", "| net | target | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    nets = [(f"{len(SAT_SIZES) - 1}-layer sigmoid, {SAT_SIZES[1]} wide, SGD {SAT_LR}, "
             f"{SAT_EPOCHS} epochs (digits)", "saturation", r["saturation"])]
    nets += [(f"{ds}: {d} layers {tuple(row['sizes'])}, ReLU, Adam", ds, row)
             for ds, rows in r["depth"].items() for d, row in rows.items()]
    for title, target, row in nets:
        out.append(f"| {title} | {t[target]} | " + " | ".join(_norm_cell(row[n])
                                                            for n in names) + " |")
    return out + ["", norm_sentence(nets), "", spread_sentence(r)]


def spread_sentence(r: dict) -> str:
    """Where the plain sigmoid net's signal is at init; read as why layer norm fails only
    where it did fail (stayed at chance) and batch norm did not."""
    spread, sat = r["spread_at_init"], r["saturation"]
    failed = sat["layernorm"]["mean"] < 0.2 <= sat["batchnorm"]["mean"]
    lead = ("Why layer norm cannot rescue the sigmoid net: at init, what tells its examples "
            "apart shrinks layer by layer." if failed else "At init, in the plain sigmoid "
            "net:")
    return (lead + " Each unit's spread "
            "over the batch (what batch norm divides by) falls from "
            f"{spread['between_examples'][0]:.2f} at layer 1 to "
            f"{spread['between_examples'][-1]:.1e} at layer {len(spread['between_examples'])}"
            ", while each example's spread over its units (what layer norm divides by) stays "
            f"{min(spread['within_example']):.2f}–{max(spread['within_example']):.2f}: every "
            "example reaches the deep layers as nearly the same vector. Batch norm rescales "
            "those small differences to unit size; layer norm rescales the vector, leaving "
            "them small.")


def _norm_cell(r: dict) -> str:
    steps = "/".join("–" if v is None else str(v) for v in r["steps_to_target"])
    return f"{r['mean']:.3f} ({steps})"


def norm_sentence(nets) -> str:
    """What each norm did to the saturated net, and how often it beat no norm on depth."""
    _, _, sat = nets[0]
    text = (f"The {len(SAT_SIZES) - 1}-layer sigmoid net ends at test accuracy "
            f"{sat['none']['mean']:.3f} without a norm, {sat['batchnorm']['mean']:.3f} with "
            f"batch norm and {sat['layernorm']['mean']:.3f} with layer norm.")
    deep = nets[1:]
    parts = []
    for n, name in (("batchnorm", "batch norm"), ("layernorm", "layer norm")):
        gains = [row[n]["mean"] - row["none"]["mean"] for _, _, row in deep]
        parts.append(f"{name} beats no norm on {sum(g > 0 for g in gains)} of {len(deep)} "
                     f"(test accuracy {min(gains):+.3f} to {max(gains):+.3f})")
    return text + " On the 4–6-layer ReLU nets, " + "; ".join(parts) + "."


if __name__ == "__main__":
    main()
