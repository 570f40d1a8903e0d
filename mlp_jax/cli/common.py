"""What the subcommands share when they run: the problem that train's and sweep's
options describe (dataset, network, optimizer), output directories and files, and the
one-line usage error (the options themselves: ``options.py``)."""

from __future__ import annotations

import os


class UsageError(Exception):
    """A bad option or configuration: reported in one line, exit status 2."""


def build_optimizer(name: str, lr: float, schedule: str, *, total_steps: int,
                    steps_per_epoch: int, lr_decay: float = 0.95, warmup_steps: int = 0,
                    weight_decay: float = 1e-4, clip: float | None = None):
    """The optimizer the CLI options describe."""
    from .. import optim

    rate = {
        "constant": lambda: lr,
        "step": lambda: optim.step_decay(lr, lr_decay, steps_per_epoch),
        "exponential": lambda: optim.exponential(lr, lr_decay, steps_per_epoch),
        "cosine": lambda: optim.cosine(lr, total_steps),
        "warmup_cosine": lambda: optim.linear_warmup(
            lr, max(warmup_steps, 1), optim.cosine(lr, max(total_steps - warmup_steps, 1))),
    }[schedule]()
    opt = optim.adamw(rate, weight_decay=weight_decay) if name == "adamw" \
        else optim.OPTIMIZERS[name](rate)
    return optim.chain(optim.clip_by_global_norm(clip), opt) if clip else opt


def binary_labels(ds, spec):
    """A binary loss on a 2-class dataset: class 1 -> 1, class 0 -> 0 (logistic) or -1 (hinge)."""
    import numpy as np

    from ..losses import BINARY01, BINARY_PM1

    kind = spec.loss_fn.labels
    if kind not in (BINARY01, BINARY_PM1):
        return ds
    lo = 0 if kind == BINARY01 else -1
    return ds._replace(**{k: None if getattr(ds, k) is None else
                          np.where(getattr(ds, k) == 1, 1, lo).astype(np.int32)
                          for k in ("y_train", "y_val", "y_test")})


def load_data(options: dict, name: str | None = None):
    """The dataset that train's options (or a checkpoint's recorded ones) describe: a
    file of your own (``data``) or a bundled one (``dataset``)."""
    from .. import data

    name = name or options.get("data") or options.get("dataset")
    try:
        return data.load(name, options.get("data_dir"),
                         label_column=options.get("label_column"),
                         val_fraction=options.get("val_fraction", 0.15),
                         seed=options.get("split_seed", 0),
                         preprocess=options.get("preprocess", "standardize"),
                         many_classes=options.get("many_classes", False))
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from e


def problem(args):
    """What the shared options describe: the dataset (binary labels where the loss wants
    them), ``make_spec(reg, dropout, input_noise)`` and the batch size."""
    from ..spec import MLPSpec

    ds = load_data(vars(args))
    loss_labels = {"logistic": (0, 1), "hinge": (-1, 1)}
    if args.loss in loss_labels and ds.num_classes != 2:
        raise UsageError(f"--loss {args.loss} is binary but {ds.name} has "
                         f"{ds.num_classes} classes")
    if args.loss == "squared":
        raise UsageError("--loss squared needs real-valued targets; the CLI's datasets are "
                         "classification (use softmax, svm, or the library API)")
    C = 1 if args.loss in loss_labels else ds.num_classes

    def make_spec(reg, dropout, input_noise):
        try:
            return MLPSpec((ds.X_train.shape[1], *args.hidden, C), activation=args.activation,
                           loss=args.loss, reg=reg, dropout=dropout, input_noise=input_noise,
                           init=args.init, norm=None if args.norm == "none" else args.norm)
        except (ValueError, TypeError) as e:
            raise UsageError(str(e)) from e

    batch_size = args.batch_size or len(ds.X_train)
    return binary_labels(ds, make_spec(0.0, 0.0, 0.0)), make_spec, batch_size


def optimizer(args, lr, num_examples: int):
    """The optimizer of the shared options at learning rate ``lr`` (a number or, in a
    sweep, a traced array)."""
    from ..batches import steps_per_epoch

    per_epoch = steps_per_epoch(num_examples, args.batch_size or num_examples)
    try:
        return build_optimizer(args.optimizer, lr, args.schedule,
                               total_steps=args.epochs * per_epoch, steps_per_epoch=per_epoch,
                               lr_decay=args.lr_decay, warmup_steps=args.warmup * per_epoch,
                               clip=args.clip)
    except ValueError as e:
        raise UsageError(f"{e} (from --lr, --lr-decay, --clip or --schedule)") from e



SWEEP_FIXED = ("dataset", "data_dir", "data", "label_column", "val_fraction", "split_seed",
               "preprocess", "many_classes", "hidden", "norm", "activation", "loss", "init",
               "optimizer", "schedule", "lr_decay", "warmup", "clip", "epochs", "batch_size",
               "grad")
SWEEP_AXES = ("seed", "lr", "reg", "dropout", "input_noise")
# A resumed run must match the options its updates depend on (the device count may change:
# checkpoints move between device counts).
RUN_FIXED = SWEEP_FIXED + SWEEP_AXES


def refuse_changes(what: str, before: dict, now: dict, names, hint: str) -> None:
    """A resumed run or sweep continues only with the options it was started with."""
    changed = [k for k in names if k in before and before[k] != now[k]]
    if changed:
        raise UsageError(f"cannot resume: {what} was run with "
                         + ", ".join(f"--{k.replace('_', '-')} {before[k]}" for k in changed)
                         + f"; give the same options, or {hint}")


def writable(path: str | None) -> None:
    """An output file named by an option can be written whole: checked before any work."""
    from ..outputs import OutputError, check_target

    if path is not None:
        try:
            check_target(path)
        except OutputError as e:
            raise UsageError(str(e)) from None


def write_text(path: str, text: str) -> None:
    """A file of the command's, replaced whole (:mod:`mlp_jax.outputs`); a target that
    is not a regular file is one line."""
    from ..outputs import OutputError, write_text

    try:
        write_text(path, text)
    except OutputError as e:
        raise UsageError(str(e)) from None


def make_out(path: str) -> None:
    """``--out``: created if need be, and writable, or one line saying why not."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {path}: a file of that name exists; name a directory") from None
    except OSError as e:
        raise UsageError(f"--out {path}: cannot create it ({e.strerror}); name a directory "
                         "you can write") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path}: not writable; name a directory you can write")
    from ..lifetime import DirectoryInUse, hold_directory

    try:
        hold_directory(path)  # one run per directory, for the command's whole life
    except DirectoryInUse as e:
        raise UsageError(str(e)) from None


def load_run(path: str, which: str = "best"):
    """``--checkpoint`` (or ``--init-from``): a run directory or its checkpoint.npz, its
    best-on-validation params loaded (its final ones: ``which="final"``)."""
    from ..checkpoint import CheckpointError, load_params

    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.npz")
    try:
        return path, load_params(path, which=which)
    except CheckpointError as e:
        raise UsageError(str(e)) from e


def usage(error: Exception) -> str:
    """The one line for an error of the library's checks on what the options describe."""
    from ..batches import BatchSizeError

    return f"{error} (--batch-size)" if isinstance(error, BatchSizeError) else str(error)
