"""The command line's vocabulary: option types (each a one-line error for a bad value),
the parser and help formatter, and the option groups train and sweep share."""

from __future__ import annotations

import argparse

SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup_cosine")


MAX_SEED = 2**63 - 1  # what jax.random.key takes


def numbers(kind, what: str, *, positive: bool = False, unique: bool = False,
             most: float | None = None):
    """A parser of comma-separated numbers, each > 0 (``positive``) or >= 0, and at most
    ``most``."""
    def parse(text):
        try:
            values = tuple(kind(t) for t in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}; got {text!r}"
                                             ) from None
        if any(not (v > 0 if positive else v >= 0) or v == float("inf") for v in values):
            raise argparse.ArgumentTypeError(f"values must be {'> 0' if positive else '>= 0'}; "
                                             f"got {text!r}")
        if most is not None and any(v > most for v in values):
            raise argparse.ArgumentTypeError(f"values must be at most {most}; got {text!r}")
        return tuple(dict.fromkeys(values)) if unique else values
    return parse


def seed(text: str) -> int:
    return numbers(int, "a seed like 0", most=MAX_SEED)(text)[0]


def hidden(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "0"):
        return ()
    return numbers(int, "widths like 100 or 256,128 (or none)", positive=True)(text)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1); got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1); got {text}")
    return value


def positive(kind, *, zero: bool = False):
    """One finite number > 0 (``zero``: >= 0)."""
    def parse(text):
        value = kind(text)
        if not (value >= 0 if zero else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>=' if zero else '>'} "
                                             f"0; got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its own errors
    return parse


def values(kind):
    """A sweep's values of one option: comma-separated numbers >= 0, repeats dropped."""
    return numbers(kind, f"{kind.__name__}s like 1e-3,3e-3", unique=True)



class Parser(argparse.ArgumentParser):
    """Bad arguments: a one-line error and exit status 2, never a traceback."""

    def error(self, message):
        self.exit(2, f"mlp-jax: error: {message}\n")


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except where there is none (None, a flag)."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def run_options(c, *, out: str, resume: str, overwrite: str, quiet: str) -> None:
    """The options train and sweep share for a run's directory and console, each with the
    command's own help: where it writes, resuming or replacing what is there, quiet, and
    the compilation cache."""
    c.add_argument("--out", default=None, help=f"output directory (default: {out})")
    c.add_argument("--resume", action="store_true", help=resume)
    c.add_argument("--overwrite", action="store_true", help=overwrite)
    c.add_argument("--quiet", action="store_true", help=quiet)
    c.add_argument("--no-compile-cache", action="store_true",
                   help="compile afresh, keeping nothing (also MLP_JAX_COMPILE_CACHE=0)")


def problem_options(c) -> None:
    """The options train and sweep share: data, network, optimizer, budget."""
    from ..activations import ACTIVATION_NAMES
    from ..data import DATASETS, PREPROCESS
    from ..losses import LOSS_NAMES
    from ..optim import OPTIMIZERS
    from ..spec import INITS, NORMS

    c.add_argument("--dataset", choices=sorted(DATASETS), default="digits",
                   help="a bundled dataset")
    c.add_argument("--data-dir", help="where cifar10's python batches are")
    f = c.add_argument_group("data of your own (instead of --dataset; README: Train on "
                             "your own data)")
    f.add_argument("--data", metavar="FILE",
                   help="a .npz (arrays X, y; optionally X_val, y_val, X_test, y_test) "
                        "or a .csv (a header row, numeric features, a label column)")
    f.add_argument("--label-column", metavar="NAME",
                   help="the CSV's label column (default: the last)")
    f.add_argument("--many-classes", action="store_true",
                   help="train even when the labels have more than max(20, N/10) "
                        "distinct values (refused by default: a regression target?)")
    f.add_argument("--val-fraction", type=fraction, default=0.15,
                   help="share of the examples drawn for validation when the file has "
                        "no X_val (0: none)")
    f.add_argument("--split-seed", type=seed, default=0,
                   help="seed of that validation draw")
    f.add_argument("--preprocess", choices=PREPROCESS, default="standardize",
                   help="standardize each feature with the training split's mean and "
                        "std, or none")
    c.add_argument("--hidden", type=hidden, default="256",
                   help="hidden widths, comma-separated ('none': linear classifier)")
    c.add_argument("--activation", choices=ACTIVATION_NAMES, default="relu",
                   help="hidden layers' nonlinearity")
    c.add_argument("--loss", choices=LOSS_NAMES, default="softmax",
                   help="logistic and hinge need a 2-class dataset")
    c.add_argument("--init", choices=INITS, default="he", help="weight initialization")
    c.add_argument("--norm", choices=("none",) + NORMS, default="none",
                   help="normalization after each hidden layer's affine map")
    c.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="update rule")
    c.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="learning-rate schedule over the run")
    c.add_argument("--lr-decay", type=positive(float), default=0.95,
                   help="per-epoch factor of the step and exponential schedules")
    c.add_argument("--warmup", type=positive(int, zero=True), default=0,
                   help="warm-up epochs (warmup_cosine)")
    c.add_argument("--clip", type=positive(float), help="clip gradients to this global norm")
    c.add_argument("--epochs", type=positive(int), default=100,
                   help="passes over the training split")
    c.add_argument("--batch-size", type=positive(int), default=64,
                   help="minibatch size (larger than the data: full batch)")
    c.add_argument("--grad", choices=("backprop", "autodiff"), default="backprop",
                   help="hand-derived backprop or jax.grad")
