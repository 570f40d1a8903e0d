"""The figures the commands write beside their numbers: a run's curves, a sweep's scores.

Each returns the path it wrote, or None where matplotlib is not installed (the
``plot`` extra); a figure replaces its file whole (:mod:`mlp_jax.outputs`).
"""

from __future__ import annotations

from .common import SWEEP_AXES


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str, title: str) -> str:
    from ..outputs import replace_whole

    fig.suptitle(title)
    fig.tight_layout()
    replace_whole(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def curves(history, path: str, title: str) -> str | None:
    """Loss and accuracy per evaluation, training beside validation."""
    plt = _pyplot()
    if plt is None:
        return None
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train (minibatch mean)")
    ax2.plot(epochs, [r["train_acc"] for r in history], label="train")  # same colours both
    if history and "val_loss" in history[0]:
        ax1.plot(epochs, [r["val_loss"] for r in history], label="validation")
        ax2.plot(epochs, [r["val_acc"] for r in history], label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(plt, fig, path, title)


def sweep(rows, metric: str, path: str, title: str) -> str | None:
    """One panel per swept hyperparameter: each configuration's score at its value (rows
    ranked, best first; diverged ones left out)."""
    plt = _pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import NullFormatter

    axes = [k for k in SWEEP_AXES[1:] if len({r[k] for r in rows}) > 1] or ["seed"]
    fig, panels = plt.subplots(1, len(axes), figsize=(4 * len(axes), 3.6), squeeze=False,
                               sharey=True)
    ok = [r for r in rows if not r["diverged"]]
    for ax, name in zip(panels[0], axes):
        ax.scatter([r[name] for r in ok], [r[metric] for r in ok], alpha=0.6, s=18)
        if ok:
            ax.scatter([ok[0][name]], [ok[0][metric]], marker="*", s=160, color="C3",
                       label="best", zorder=3)
            ax.legend(loc="lower right")
        if name in ("lr", "reg") and all(r[name] > 0 for r in ok):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=name)
        ax.grid(alpha=0.3)
    panels[0][0].set_ylabel(metric + (f" ({len(rows) - len(ok)} diverged, not shown)"
                                      if len(ok) < len(rows) else ""))
    return _save(plt, fig, path, title)
