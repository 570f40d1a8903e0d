"""Universal approximation: one hidden layer fits a continuous 1-D function; the error
falls with the width.

    python -m experiments.universal           # full (about 30 s)
    python -m experiments.universal --quick   # seconds

Target f(x) = sin(3x) + 0.3 x^2 on [-2, 2]; tanh hidden layer, squared loss, Adam.
Writes experiments/results/universal.{json,png}.
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import figure_path, quick_mode, write_json  # noqa: E402
from mlp_jax import data, optim, train  # noqa: E402

QUICK = quick_mode()
WIDTHS = [1, 4, 32] if QUICK else [1, 2, 4, 8, 16, 32, 64, 128]
STEPS = 500 if QUICK else 8_000  # full-batch Adam steps, cosine decay


def target(x):
    return np.sin(3 * x) + 0.3 * x**2


def main():
    x = np.linspace(-2, 2, 400, dtype=np.float32)[:, None]
    y = target(x).astype(np.float32)
    x_test = np.linspace(-2, 2, 1001, dtype=np.float32)[:, None]
    ds = data.Dataset("f(x)", x, y, None, None, x_test, target(x_test).astype(np.float32), 1)
    results, fits = {"widths": WIDTHS, "max_error": [], "rms_error": []}, {}
    for w in WIDTHS:
        spec = mj.MLPSpec((1, w, 1), activation="tanh", loss="squared", init="xavier")
        r = train.fit(spec, ds, optim.adam(optim.cosine(0.02, STEPS)), epochs=STEPS,
                      batch_size=len(x), key=jax.random.key(0), eval_every=STEPS, progress=False)
        pred = np.asarray(mj.forward(r.state.params, x_test, spec))
        err = np.abs(pred - ds.y_test)
        results["max_error"].append(float(err.max()))
        results["rms_error"].append(float(np.sqrt((err**2).mean())))
        fits[w] = pred
        print(f"width {w:>3}: max |error| {err.max():.4f}, rms {np.sqrt((err**2).mean()):.4f}")
    print(f"wrote {write_json('universal', results, QUICK)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(x_test, ds.y_test, "k", lw=3, alpha=0.3, label="target")
    for w in WIDTHS[:: max(len(WIDTHS) // 4, 1)]:
        ax1.plot(x_test, fits[w], label=f"{w} hidden")
    ax1.set(title="one hidden layer (tanh)", xlabel="x")
    ax1.legend()
    ax2.loglog(WIDTHS, results["max_error"], "o-", label="max |error|")
    ax2.loglog(WIDTHS, results["rms_error"], "s-", label="rms error")
    ax2.set(xlabel="hidden units", title="error against width")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure_path("universal", QUICK), dpi=90)


def readme(r: dict) -> list[str]:
    """This experiment's README block, from its JSON."""
    return ["### Universal approximation (`universal`)", "",
            "`sin(3x) + 0.3x²` on [−2, 2], one tanh hidden layer.", "",
            "| hidden | " + " | ".join(map(str, r["widths"])) + " |",
            "|---|" + "---|" * len(r["widths"]),
            "| max abs error | " + " | ".join(f"{v:.4f}" for v in r["max_error"]) + " |"]


if __name__ == "__main__":
    main()
