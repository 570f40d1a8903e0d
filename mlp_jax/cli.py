"""The ``mlp-jax`` command line: ``train``, ``sweep``, ``eval`` and ``gradcheck``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time


def _load_function(where: str):
    """``module:name`` or ``path/to/file.py:name`` -> the function."""
    import importlib
    import importlib.util

    module, _, name = where.rpartition(":")
    if not module or not name:
        raise UsageError(f"--function {where}: expected MODULE:NAME or FILE.py:NAME")
    try:
        if module.endswith(".py"):
            spec = importlib.util.spec_from_file_location(
                os.path.splitext(os.path.basename(module))[0], module)
            if spec is None or not os.path.isfile(module):
                raise ImportError(f"no file {module}")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            sys.path.insert(0, os.getcwd())
            mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 (the user's module failed to import: say so)
        raise UsageError(f"--function {where}: cannot import {module}: "
                         f"{type(e).__name__}: {e}") from None
    if not hasattr(mod, name):
        raise UsageError(f"--function {where}: {module} has no {name}")
    return getattr(mod, name)


def _check_function(args) -> int:
    """``gradcheck --function``: a user's function on random inputs of the given shapes."""
    import jax
    import numpy as np

    from .derivative import DerivativeInputError, check_derivative

    if not args.shapes:
        raise UsageError("--function needs --shapes: one shape per argument, e.g. 8,3 3")
    f = _load_function(args.function)
    results = []
    for draw in range(args.draws):
        rng = np.random.default_rng((args.seed, draw))
        inputs = [args.scale * rng.normal(size=shape) for shape in args.shapes]
        with jax.enable_x64(True):
            inputs = [jax.numpy.asarray(a, args.dtype) for a in inputs]
            try:
                report = check_derivative(f, *inputs, seed=draw, name=args.function)
            except DerivativeInputError as e:
                raise UsageError(f"--function {args.function}: {e}") from None
        results.append(report)
        print(f"draw {draw}: {'PASS' if report.passed else 'FAIL'}, worst share of the "
              f"allowance {report.used:.2g}, {report.kinks} entries on a kink", flush=True)
    worst = max(results, key=lambda r: (not r.passed, r.used))
    print(f"\nthe {'first failing' if not worst.passed else 'closest'} draw:\n{worst}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results)} draws at {args.dtype}, {failed} failed")
    return 1 if failed else 0


def _gradcheck(args) -> int:
    from . import gradcheck as gc
    from .gradmatrix import MATRIX_DEPTHS, check_matrix, random_sweep

    _writable(args.json)
    if args.function:
        return _check_function(args)
    if args.shapes or args.dtype != "float64":
        raise UsageError("--shapes and --dtype go with --function")

    if args.json:  # fail now, not after the whole run
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UsageError(f"--json {args.json}: folder {folder} does not exist or is not "
                             "writable; create it or name another file")
    t0 = time.perf_counter()
    tty = sys.stderr.isatty() and not args.quiet

    def progress(done, total):
        if tty:
            print(f"\r{what}: {done}/{total}", end="", file=sys.stderr, flush=True)

    if args.random:
        what = "checking random configurations"
        results = random_sweep(args.random, seed=args.seed, draws=args.draws,
                               workers=args.workers, progress=progress)
        depths = sorted({r["depth"] for r in results})
        title = (f"Random sweep of correct code: {len(results)} problems over "
                 f"{-(-len(results) // args.draws)} configurations (seed {args.seed}); "
                 "failed / checked per cell\n(depths 1-6, widths 3-40, batch 1-64, reg, "
                 "dropout, input noise, maxout pieces, bias or not, batch norm, layer norm or "
                 "none; half the problems have a row exactly on the kinks)")
    else:
        what = "checking cells"
        results = check_matrix(workers=args.workers, progress=progress)
        depths = MATRIX_DEPTHS
        title = ("The matrix: every activation x loss x depth 1-4 x reg {0, 0.1} x dropout "
                 "{0, 0.3}, and with layer norm and batch norm every activation but maxout x "
                 "loss x depth 2-4 (reg 0.1, dropout 0.3); float64; depth 1 is the linear "
                 "classifier\n"
                 "each entry: worst CS231n relative error vs jax.grad / vs finite differences, "
                 "'!' where a cell failed")
    if tty:
        print(file=sys.stderr)
    if args.json:
        _write_text(args.json, json.dumps(results, indent=1))

    losses = list(dict.fromkeys(r["loss"] for r in sorted(results, key=lambda r: r["loss"])))
    acts = list(dict.fromkeys(r["activation"] for r in results))
    cells = {}
    for r in results:
        key = (r["activation"], r["depth"], r["loss"])
        ad, fd, bad, n = cells.get(key, (0.0, 0.0, 0, 0))
        cells[key] = (max(ad, r["autodiff"]), max(fd, r["fd"]), bad + (not r["passed"]), n + 1)
    print(title)
    header = f"{'activation':<11}{'depth':>5}  " + "".join(f"{name:>21}" for name in losses)
    print(header)
    print("-" * len(header))
    for act in acts:
        for depth in depths:
            row = f"{act:<11}{depth:>5}  "
            for name in losses:
                ad, fd, bad, n = cells.get((act, depth, name), (0.0, 0.0, 0, 0))
                if args.random:
                    row += f"{f'{bad} / {n}' if n else '-':>21}"
                else:
                    row += f"{ad:>9.1e} / {fd:>7.1e}{'!' if bad else ' '}"
            print(row)
    failed = sum(not r["passed"] for r in results)
    need_ad = max(r["absolute_used_autodiff"] for r in results)
    need_fd = max(r["absolute_used_fd"] for r in results)
    kinks = sum(r["kink_entries"] for r in results)
    print("\n" + gc.rule_line())

    def need(share):
        return "none" if share == 0 else f"{share:.2g} (headroom {1 / share:.3g}x)"

    print(f"largest share of the absolute term any entry needed beyond rtol: {need(need_ad)} "
          f"vs jax.grad, {need(need_fd)} vs finite differences; {kinks} finite-difference "
          "entries straddled a kink and were compared with jax.grad only")
    noun = "false alarms (correct code)" if args.random else "failed"
    print(f"{len(results)} {'problems' if args.random else 'cells'}, {failed} {noun}; "
          f"worst share of the allowance used {max(r['used'] for r in results):.2g}; "
          f"{time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _shape(text: str) -> tuple[int, ...]:
    if text == "scalar":
        return ()
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected sizes like 8,3") from None
    if any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(f"shape {text!r}: sizes must be positive")
    return shape


class UsageError(Exception):
    """A bad option or configuration: reported in one line, exit status 2."""


SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup_cosine")


MAX_SEED = 2**63 - 1  # what jax.random.key takes


def _numbers(kind, what: str, *, positive: bool = False, unique: bool = False,
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


def _seed(text: str) -> int:
    return _numbers(int, "a seed like 0", most=MAX_SEED)(text)[0]


def _hidden(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "0"):
        return ()
    return _numbers(int, "widths like 100 or 256,128 (or none)", positive=True)(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1); got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1); got {text}")
    return value


def _positive(kind, *, zero: bool = False):
    """One finite number > 0 (``zero``: >= 0)."""
    def parse(text):
        value = kind(text)
        if not (value >= 0 if zero else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>=' if zero else '>'} "
                                             f"0; got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its own errors
    return parse


def _values(kind):
    """A sweep's values of one option: comma-separated numbers >= 0, repeats dropped."""
    return _numbers(kind, f"{kind.__name__}s like 1e-3,3e-3", unique=True)


def build_optimizer(name: str, lr: float, schedule: str, *, total_steps: int,
                    steps_per_epoch: int, lr_decay: float = 0.95, warmup_steps: int = 0,
                    weight_decay: float = 1e-4, clip: float | None = None):
    """The optimizer the CLI options describe."""
    from . import optim

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


def _binary_labels(ds, spec):
    """A binary loss on a 2-class dataset: class 1 -> 1, class 0 -> 0 (logistic) or -1 (hinge)."""
    import numpy as np

    from .losses import BINARY01, BINARY_PM1

    kind = spec.loss_fn.labels
    if kind not in (BINARY01, BINARY_PM1):
        return ds
    lo = 0 if kind == BINARY01 else -1
    return ds._replace(**{k: None if getattr(ds, k) is None else
                          np.where(getattr(ds, k) == 1, 1, lo).astype(np.int32)
                          for k in ("y_train", "y_val", "y_test")})


def _load_data(options: dict, name: str | None = None):
    """The dataset that train's options (or a checkpoint's recorded ones) describe: a
    file of your own (``data``) or a bundled one (``dataset``)."""
    from . import data

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


def _problem(args):
    """What the shared options describe: the dataset (binary labels where the loss wants
    them), ``make_spec(reg, dropout, input_noise)`` and the batch size."""
    from .spec import MLPSpec

    ds = _load_data(vars(args))
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
    if args.norm == "batchnorm":  # its batch rules, as one line before anything is written
        from .train import check_batchnorm_batches

        try:
            check_batchnorm_batches(len(ds.X_train), batch_size)
        except ValueError as e:
            raise UsageError(f"{e} (--batch-size)") from e
    return _binary_labels(ds, make_spec(0.0, 0.0, 0.0)), make_spec, batch_size


def _optimizer(args, lr, num_examples: int):
    """The optimizer of the shared options at learning rate ``lr`` (a number or, in a
    sweep, a traced array)."""
    from .train import steps_per_epoch

    per_epoch = steps_per_epoch(num_examples, args.batch_size or num_examples)
    try:
        return build_optimizer(args.optimizer, lr, args.schedule,
                               total_steps=args.epochs * per_epoch, steps_per_epoch=per_epoch,
                               lr_decay=args.lr_decay, warmup_steps=args.warmup * per_epoch,
                               clip=args.clip)
    except ValueError as e:
        raise UsageError(f"{e} (from --lr, --lr-decay, --clip or --schedule)") from e


RUN_FILES = ("checkpoint.npz", "metrics.jsonl", "summary.json", "curves.png")  # train's


def _train(args) -> int:
    from . import parallel

    try:  # before any other JAX work
        distributed = parallel.initialize(args.coordinator, args.num_processes, args.process_id,
                                          timeout=args.dist_timeout)
    except ValueError as e:
        raise UsageError(str(e)) from e
    import jax

    from . import lifetime, train
    from .checkpoint import CheckpointError, load_params

    lead = jax.process_index() == 0  # only process 0 writes files and talks
    args.quiet = args.quiet or not lead

    ds, make_spec, batch_size = _problem(args)
    spec = make_spec(args.reg, args.dropout, args.input_noise)
    per_epoch = train.steps_per_epoch(len(ds.X_train), batch_size)
    opt = _optimizer(args, args.lr, len(ds.X_train))
    ckpt_path = os.path.join(args.out, "checkpoint.npz")
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config["hidden"] = list(args.hidden)
    if args.resume and (args.overwrite or args.init_from):
        raise UsageError("--resume continues the run in --out as it was; it cannot be "
                         "combined with --overwrite or --init-from")
    if os.path.exists(ckpt_path) and not args.resume and not args.overwrite and lead:
        raise UsageError(f"{ckpt_path} exists: pass --resume to continue it, --overwrite to "
                         "start it again, or choose another --out")
    if args.resume and not os.path.exists(ckpt_path):
        raise UsageError(f"--resume: {args.out} holds no run to continue (no "
                         "checkpoint.npz); drop --resume to start one")
    state = _init_from(args, spec, opt) if args.init_from else None
    if lead:
        _make_out(args.out)
        if args.overwrite:  # the old run goes first, whole (an interrupt waits for it)
            with lifetime.whole_write():
                for name in RUN_FILES:
                    if os.path.exists(os.path.join(args.out, name)):
                        os.remove(os.path.join(args.out, name))
    rows = []
    if args.resume:
        try:
            saved = load_params(ckpt_path)
        except CheckpointError as e:
            raise UsageError(f"cannot resume: {e}") from e
        _refuse_changes(f"the run in {args.out}", saved.meta.get("config", {}), config,
                        RUN_FIXED, f"--init-from {args.out} --out NEW to start a new run "
                        "from its params")
        rows = saved.history
    if lead:
        # rewritten from the checkpoint on resume
        _write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def log(state, row):
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if not args.quiet and not sys.stderr.isatty():
            val = f", val acc {row['val_acc']:.4f}" if "val_acc" in row else ""
            print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, "
                  f"train acc {row['train_acc']:.4f}{val}", flush=True)

    if not args.quiet:
        print(f"{ds.describe()}\nnetwork {spec.sizes}, {spec.activation_name}, "
              f"{spec.loss_fn.name}, {args.optimizer} lr {args.lr} ({args.schedule}), "
              f"{args.epochs} epochs of {per_epoch} steps (batch {batch_size}), "
              f"grad={args.grad}", flush=True)
    mesh = None
    if distributed or args.devices != 1:
        try:
            mesh = parallel.data_mesh(args.devices if args.devices else None)
            parallel.check_batches(len(ds.X_train), batch_size, mesh)
        except ValueError as e:
            raise UsageError(str(e)) from e
        if not args.quiet:
            print(f"data parallel over {mesh.shape['data']} devices "
                  f"({jax.process_count()} processes), form {args.form}", flush=True)
    if mesh is None:  # the data on the device, one array at a time, each numpy copy freed
        for k in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
            if getattr(ds, k) is not None:
                ds = ds._replace(**{k: jax.device_put(getattr(ds, k))})
    t0 = time.perf_counter()
    try:
        result = train.fit(spec, ds, opt, epochs=args.epochs, batch_size=batch_size,
                           key=jax.random.key(args.seed), state=state, grad=args.grad,
                           eval_every=args.eval_every, checkpoint_path=ckpt_path,
                           resume=args.resume, meta={"config": config},
                           progress=False if args.quiet else None,
                           callbacks=[log] if lead else [], mesh=mesh, form=args.form)
    except train.TrainingDiverged as e:
        print(f"mlp-jax: training stopped: {e}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - t0
    if not lead:
        return 0
    summary = _summarize(result.state.params, ds, spec, stats=result.state.stats)
    if ds.X_val is not None:
        summary.update({f"best_val_params_{k}": v for k, v in
                        _summarize(result.best_params, ds, spec,
                                   stats=result.best_stats).items() if k.endswith("acc")})
    summary["seconds"] = round(elapsed, 2)
    _write_text(os.path.join(args.out, "summary.json"), json.dumps(summary, indent=1))
    # the result first, --quiet or not; the plot (matplotlib's import alone is ~1 s) after
    final = " ".join(f"{k} {v:.4f}" for k, v in summary.items()
                     if k.endswith("acc") and not k.startswith("best"))
    print(f"final params: {final}", flush=True)
    if ds.X_val is not None:
        best = " ".join(f"{k[16:]} {v:.4f}" for k, v in summary.items() if k.startswith("best"))
        print(f"best-on-validation params: {best}", flush=True)
    plot = _plot(result.history, os.path.join(args.out, "curves.png"), ds.describe())
    print(f"{elapsed:.1f} s; wrote {ckpt_path}, {metrics_path}"
          + (f", {plot}" if plot else " (pip install 'mlp_jax[plot]' for curves.png)"))
    return 0


def _init_from(args, spec, opt):
    """The training state of ``--init-from RUN``: that run's final params, with a fresh
    optimizer state, step count (so a fresh schedule) and key from ``--seed``."""
    import jax

    from . import train

    ck = _checkpoint(args.init_from, which="final")[1]
    params = ck.params
    fresh = train.init_state(jax.random.key(args.seed), spec, opt)
    shapes = lambda tree: [(a.shape, a.dtype) for a in jax.tree.leaves(tree)]  # noqa: E731
    if shapes(params) != shapes(fresh.params):
        raise UsageError(f"--init-from {args.init_from}: its params have shapes "
                         f"{[a.shape for a in jax.tree.leaves(params)]}, this network's are "
                         f"{[a.shape for a in jax.tree.leaves(fresh.params)]}: give the same "
                         "--hidden, --activation (maxout's pieces) and --norm")
    # the same leaves, so the same norm: batch norm's statistics come with its params
    return fresh._replace(params=params, opt_state=opt.init(params), stats=ck.stats)


# The options a sweep's results depend on, besides each configuration's own values; a
# resumed sweep must match them.
SWEEP_FIXED = ("dataset", "data_dir", "data", "label_column", "val_fraction", "split_seed",
               "preprocess", "many_classes", "hidden", "norm", "activation", "loss", "init",
               "optimizer", "schedule", "lr_decay", "warmup", "clip", "epochs", "batch_size",
               "grad")
SWEEP_AXES = ("seed", "lr", "reg", "dropout", "input_noise")
# A resumed run must match the options its updates depend on (the device count may change:
# checkpoints move between device counts).
RUN_FIXED = SWEEP_FIXED + SWEEP_AXES


def _refuse_changes(what: str, before: dict, now: dict, names, hint: str) -> None:
    """A resumed run or sweep continues only with the options it was started with."""
    changed = [k for k in names if k in before and before[k] != now[k]]
    if changed:
        raise UsageError(f"cannot resume: {what} was run with "
                         + ", ".join(f"--{k.replace('_', '-')} {before[k]}" for k in changed)
                         + f"; give the same options, or {hint}")


def _sweep_configs(args) -> list[dict]:
    from . import sweep

    if args.random:
        spans = dict(lr=args.lr, reg=args.reg, dropout=args.dropout,
                     input_noise=args.input_noise)
        return sweep.random_search(args.random, args.search_seed, seeds=args.seeds,
                                   **{k: (min(v), max(v)) for k, v in spans.items()})
    return sweep.grid(seeds=args.seeds, lrs=args.lr, regs=args.reg, dropouts=args.dropout,
                      input_noises=args.input_noise)


def _train_command(args, row) -> str:
    """The ``mlp-jax train`` command that reruns one configuration of the sweep."""
    import shlex

    argv = ["mlp-jax", "train"]
    for name in SWEEP_FIXED:
        value = getattr(args, name)
        if value is None or value is False or (args.data and name in ("dataset", "data_dir")):
            continue
        if value is True:  # a flag
            argv.append(f"--{name.replace('_', '-')}")
            continue
        if name == "hidden":
            value = ",".join(map(str, value)) or "none"
        argv += [f"--{name.replace('_', '-')}", str(value)]
    for name in SWEEP_AXES:
        argv += [f"--{name.replace('_', '-')}", repr(row[name])]
    return shlex.join(argv + ["--out", os.path.join(args.out, "best")])


def _writable(path: str | None) -> None:
    """An output file named by an option can be written whole: checked before any work."""
    from .outputs import OutputError, check_target

    if path is not None:
        try:
            check_target(path)
        except OutputError as e:
            raise UsageError(str(e)) from None


def _write_text(path: str, text: str) -> None:
    """A file of the command's, replaced whole (:mod:`mlp_jax.outputs`); a target that
    is not a regular file is one line."""
    from .outputs import OutputError, write_text

    try:
        write_text(path, text)
    except OutputError as e:
        raise UsageError(str(e)) from None


def _make_out(path: str) -> None:
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
    from .lifetime import DirectoryInUse, hold_directory

    try:
        hold_directory(path)  # one run per directory, for the command's whole life
    except DirectoryInUse as e:
        raise UsageError(str(e)) from None


def _sweep(args) -> int:
    from . import parallel

    parallel.use_every_core()  # before JAX's first operation: a device per core on CPU
    import jax

    from . import sweep, train
    from .spec import Hyper

    configs = _sweep_configs(args)
    ds, make_spec, batch_size = _problem(args)
    for c in configs:  # every value checked before anything runs
        make_spec(c["reg"], c["dropout"], c["input_noise"])
    _optimizer(args, max(args.lr), len(ds.X_train))
    try:
        mesh = sweep.config_mesh(args.devices or None)
    except ValueError as e:
        raise UsageError(f"--devices {args.devices}: {e}") from e
    mesh = mesh if mesh.shape["config"] > 1 else None
    batching = args.batching or sweep.BATCHING.get(jax.default_backend(), "vmap")
    chunk = args.chunk or (None if batching == "vmap" else len(mesh.devices.flat) if mesh
                           else 1)

    _make_out(args.out)
    paths = {name: os.path.join(args.out, name) for name in
             ("options.json", "results.jsonl", "sweep.csv", "sweep.json", "sweep.png")}
    fixed = {name: getattr(args, name) for name in SWEEP_FIXED}
    fixed["hidden"] = list(args.hidden)
    done = {}
    if args.resume and args.overwrite:
        raise UsageError("--resume finishes the sweep in --out; --overwrite starts it again: "
                         "give one")
    if args.overwrite:
        for path in paths.values():
            if os.path.exists(path):
                os.remove(path)
    if os.path.exists(paths["results.jsonl"]):
        if not args.resume:
            raise UsageError(f"{paths['results.jsonl']} exists: pass --resume to finish that "
                             "sweep, --overwrite to start it again, or choose another --out")
        try:
            with open(paths["options.json"]) as f:
                before = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot resume: {paths['options.json']} is unreadable ({e})") from e
        _refuse_changes(f"the sweep in {args.out}", before, fixed, SWEEP_FIXED,
                        "another --out for a new sweep")
        with open(paths["results.jsonl"]) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a crash: that config runs again
                    continue
                done[tuple(row[k] for k in SWEEP_AXES)] = row
        # without a line a crash cut short, which the next append would run into
        _write_text(paths["results.jsonl"], "".join(json.dumps(r) + "\n"
                                                      for r in done.values()))
    else:
        _write_text(paths["options.json"], json.dumps(fixed, indent=1))

    def key(c):  # a config's values as they will be stored (None: the spec's default)
        return (c["seed"], c["lr"], *(0.0 if c[k] is None else c[k] for k in SWEEP_AXES[2:]))

    todo = [c for c in configs if key(c) not in done]
    rows = [done[key(c)] for c in configs if key(c) in done]
    # Dropout and input noise exist in a net or not (the spec's program has them or not):
    # one program per kind, so each run is the one `mlp-jax train` with its values runs.
    groups = {}
    for c in todo:
        groups.setdefault((c["dropout"] > 0, c["input_noise"] > 0), []).append(c)
    metric = "val_acc" if ds.X_val is not None else "train_acc"
    t0 = time.perf_counter()
    if not args.quiet:
        where = f"{mesh.shape['config']} devices" if mesh else "1 device"
        print(f"{ds.describe()}\nnetwork {make_spec(0, 0, 0).sizes}, {args.activation}, "
              f"{args.loss}, {args.optimizer} ({args.schedule}), {args.epochs} epochs "
              f"(batch {batch_size}); {len(configs)} configurations"
              + (f" ({len(rows)} already done)" if rows else "")
              + f" on {where}, {batching}", flush=True)
    bar = train._progress_bar(None if not args.quiet else False, len(todo), "sweep")
    if bar is not None:
        bar.unit = "config"

    def record(spec, part):
        new, gone = [], part.diverged()
        for i, c in enumerate(part.configs):
            row = dict(zip(SWEEP_AXES, key(c)))
            row["final_loss"] = float(part.losses[i, -1].mean())
            row["diverged"] = bool(gone[i])
            # the test split is never looked at while choosing
            row.update(_summarize(part.params_of(i), ds, spec, Hyper(*key(c)[2:]),
                                  ("train", "val"), part.stats_of(i)))
            new.append(row)
        with open(paths["results.jsonl"], "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in new)
            f.flush()
            os.fsync(f.fileno())
        rows.extend(new)
        if bar is not None:
            bar.update(len(new))
        elif not args.quiet:
            best = max(rows, key=lambda r: (not r["diverged"], r[metric]))
            print(f"{len(rows)}/{len(configs)} configurations, {time.perf_counter() - t0:.1f} "
                  f"s; best {metric} so far {best[metric]:.4f}", flush=True)

    try:
        for group in groups.values():
            spec = make_spec(0.0, max(c["dropout"] for c in group),
                             max(c["input_noise"] for c in group))
            sweep.sweep(spec, ds, lambda lr: _optimizer(args, lr, len(ds.X_train)), group,
                        epochs=args.epochs, batch_size=batch_size, grad=args.grad, mesh=mesh,
                        batching=batching, chunk=chunk,
                        callback=lambda start, part, spec=spec: record(spec, part))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0

    rows.sort(key=lambda r: (r["diverged"], -r[metric], r.get("val_loss", r["train_loss"])))
    best = rows[0]
    n_diverged = sum(r["diverged"] for r in rows)
    command = _train_command(args, best)
    columns = list(SWEEP_AXES) + [k for k in ("final_loss", "train_loss", "train_acc",
                                              "val_loss", "val_acc", "diverged") if k in best]
    _write_text(paths["sweep.csv"], ",".join(columns) + "\n" + "".join(
        ",".join(str(r[k]) for k in columns) + "\n" for r in rows))
    _write_text(paths["sweep.json"], json.dumps(
        dict(options=fixed, metric=metric, seconds=round(elapsed, 2), diverged=n_diverged,
             best=None if best["diverged"] else best,
             best_command=None if best["diverged"] else command, rows=rows),
        indent=1))
    if not args.quiet:
        print(f"\n{'rank':>4}  " + "".join(f"{k:>12}" for k in columns[:-1]))
        for rank, r in enumerate(rows[:10], 1):
            print(f"{rank:>4}  " + "".join(f"{r[k]:>12.4g}" for k in columns[:-1])
                  + ("  diverged" if r["diverged"] else ""))
        if n_diverged:
            print(f"\n{n_diverged} of {len(rows)} configurations diverged (ranked last): a "
                  f"loss not finite, or above {train.DIVERGED:g} x max(1, its first value)")
        if not best["diverged"]:
            print(f"\nbest {metric} {best[metric]:.4f}; rerun it with:\n  {command}",
                  flush=True)
    plot = _plot_sweep(rows, metric, paths["sweep.png"], f"{ds.describe()}: {len(rows)} "
                       "configurations")  # after the result: matplotlib's import is slow
    if not args.quiet:
        print(f"{elapsed:.1f} s; wrote {paths['sweep.csv']}, {paths['sweep.json']}"
              + (f", {plot}" if plot else " (pip install 'mlp_jax[plot]' for sweep.png)"))
    if best["diverged"]:
        print(f"mlp-jax: every configuration diverged (results in {args.out}): lower the "
              "learning rates", file=sys.stderr)
        return 1
    return 0


def _plot_sweep(rows, metric, path, title) -> str | None:
    """One panel per swept hyperparameter: each configuration's score at its value."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig.suptitle(title)
    fig.tight_layout()
    from .outputs import replace_whole

    replace_whole(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def _summarize(params, ds, spec, hyper=None, splits=("train", "val", "test"),
               stats=None) -> dict:
    from .train import evaluate

    out = {}
    for split in splits:
        X = getattr(ds, f"X_{split}")
        if X is not None:
            loss, acc = evaluate(params, X, getattr(ds, f"y_{split}"), spec, hyper, stats)
            out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
    return out


def _plot(history, path, title) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.suptitle(title)
    fig.tight_layout()
    from .outputs import replace_whole

    replace_whole(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def _checkpoint(path: str, which: str = "best"):
    """``--checkpoint`` (or ``--init-from``): a run directory or its checkpoint.npz, its
    best-on-validation params loaded (its final ones: ``which="final"``)."""
    from .checkpoint import CheckpointError, load_params

    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.npz")
    try:
        return path, load_params(path, which=which)
    except CheckpointError as e:
        raise UsageError(str(e)) from e


def _own_file(path: str, ck, labels: str):
    """A file of your own, read as the checkpoint's run read its training file: the same
    label column, feature columns and preprocessing. Returns ``(X, y or None)``,
    transformed and encoded."""
    from . import files
    from .data import check_features

    prep = ck.preprocessing
    if prep is None:
        raise UsageError(f"--data {path}: the checkpoint's run trained on a bundled dataset "
                         f"({ck.meta.get('config', {}).get('dataset')}), so it stored no "
                         "preprocessing to apply to a file; use a run trained with --data")
    try:
        arrays = files.read(path, label_column=prep.label_column, labels=labels,
                            features=prep.features)
        X = check_features(arrays["X"], f"{path}: X")
        if X.shape[1] != ck.spec.sizes[0]:
            raise ValueError(f"{path} has {X.shape[1]} features; the checkpoint's network "
                             f"takes {ck.spec.sizes[0]}")
        y = arrays.get("y")
        return X, None if y is None else prep.encode(y, f"{path}: labels")
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e


def _eval(args) -> int:
    from .data import Dataset
    from .losses import CLASS

    path, ck = _checkpoint(args.checkpoint, args.params)
    config = ck.meta.get("config", {})
    if args.data:
        X, y = _own_file(args.data, ck, labels="required")
        ds = Dataset(os.path.basename(args.data), X[:0], y[:0], None, None,
                     ck.preprocessing.transform(X, copy=False), y,
                     len(ck.preprocessing.classes), ck.preprocessing)
        splits = ("test",)
    else:
        if not (args.dataset or config.get("data") or config.get("dataset")):
            raise UsageError("the checkpoint does not say its dataset: pass --dataset or --data")
        ds = _load_data({**config, "data_dir": args.data_dir or config.get("data_dir")},
                        args.dataset)
        splits = ("train", "val", "test")
    name = ds.name
    ds = _binary_labels(ds, ck.spec)
    D, C = ck.spec.sizes[0], ck.spec.sizes[-1]
    if not args.data and ds.X_train.shape[1] != D:  # a file's columns: checked in _own_file
        raise UsageError(f"the checkpoint's network takes {D} features but {name} has "
                         f"{ds.X_train.shape[1]}: evaluate it on the dataset it was trained on")
    if ck.spec.loss_fn.labels == CLASS and ds.num_classes != C:
        raise UsageError(f"the checkpoint's network has {C} classes but {name} has "
                         f"{ds.num_classes}: evaluate it on the dataset it was trained on")
    summary = _summarize(ck.params, ds, ck.spec, splits=splits, stats=ck.stats)
    what = f"{name}: {len(ds.X_test)} examples" if args.data else ds.describe()
    print(f"{path} ({ck.which} params): {what}, network {ck.spec.sizes} "
          f"{ck.spec.activation_name}")
    print(" ".join(f"{k.removeprefix('test_') if args.data else k} {v:.4f}"
                   for k, v in summary.items()))
    return 0


def _predict(args) -> int:
    import csv
    import io

    import numpy as np

    from . import inference

    _writable(args.out)
    path, ck = _checkpoint(args.checkpoint, args.params)
    X, y = _own_file(args.data, ck, labels="optional")
    try:
        p = inference.predict(ck.params, X, ck.spec, ck.preprocessing, stats=ck.stats)
    except ValueError as e:
        raise UsageError(f"--data {args.data}: {e}") from e
    classes = ck.preprocessing.classes
    if p.probabilities is not None:
        header, values = [f"p_{c}" for c in classes], p.probabilities
    elif ck.spec.sizes[-1] > 1:
        header, values = [f"score_{c}" for c in classes], p.scores
    else:
        header, values = ["score"], p.scores
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(([] if p.labels is None else ["label"]) + header)
    for i, row in enumerate(values.tolist()):
        w.writerow(([] if p.labels is None else [p.labels[i]]) + row)
    if args.out:
        _write_text(args.out, text.getvalue())
    else:
        sys.stdout.write(text.getvalue())
    if y is not None and p.labels is not None:
        acc = float(np.mean(p.labels == ck.preprocessing.decode(y)))
        print(f"{len(X)} predictions; accuracy against the file's labels {acc:.4f}"
              + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    elif args.out:
        print(f"{len(X)} predictions; wrote {args.out}", file=sys.stderr)
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments: a one-line error and exit status 2, never a traceback."""

    def error(self, message):
        self.exit(2, f"mlp-jax: error: {message}\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except where there is none (None, a flag)."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlp-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    g = sub.add_parser("gradcheck", help="check hand backprop against jax.grad and finite "
                       "differences over every activation x loss x depth x reg x dropout, "
                       "or over random problems (--random N)",
                       formatter_class=_Help)
    g.add_argument("--workers", type=_positive(int), default=2, help="processes to use")
    g.add_argument("--random", type=_positive(int), metavar="N",
                   help="instead of the matrix, check N random problems of correct code and "
                        "count false alarms")
    g.add_argument("--seed", type=_seed, default=0, help="seed of the random configurations")
    g.add_argument("--draws", type=_positive(int), default=4,
                   help="random problems per configuration (one compile serves them); with "
                        "--function, random draws of the inputs")
    g.add_argument("--json", metavar="FILE", help="also write every cell's result to FILE")
    g.add_argument("--quiet", action="store_true", help="no progress counter")
    u = g.add_argument_group("a function of your own (instead of the matrix)")
    u.add_argument("--function", metavar="MODULE:NAME",
                   help="check the derivative JAX uses for this function (its custom_vjp or "
                        "custom_jvp rule, or its parts') on random inputs; FILE.py:NAME works "
                        "too")
    u.add_argument("--shapes", type=_shape, nargs="+", metavar="SHAPE",
                   help="one shape per argument, e.g. 8,3 3 (a scalar: scalar)")
    u.add_argument("--dtype", choices=("float64", "float32", "float16", "bfloat16"),
                   default="float64", help="precision of the inputs")
    u.add_argument("--scale", type=_positive(float), default=1.0,
                   help="standard deviation of the random inputs")
    g.set_defaults(func=_gradcheck)

    from .activations import ACTIVATION_NAMES
    from .data import DATASETS, PREPROCESS
    from .losses import LOSS_NAMES
    from .optim import OPTIMIZERS
    from .spec import INITS, NORMS

    def problem_options(c):  # what train and sweep share: data, network, optimizer, budget
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
        f.add_argument("--val-fraction", type=_fraction, default=0.15,
                       help="share of the examples drawn for validation when the file has "
                            "no X_val (0: none)")
        f.add_argument("--split-seed", type=_seed, default=0,
                       help="seed of that validation draw")
        f.add_argument("--preprocess", choices=PREPROCESS, default="standardize",
                       help="standardize each feature with the training split's mean and "
                            "std, or none")
        c.add_argument("--hidden", type=_hidden, default="256",
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
        c.add_argument("--lr-decay", type=_positive(float), default=0.95,
                       help="per-epoch factor of the step and exponential schedules")
        c.add_argument("--warmup", type=_positive(int, zero=True), default=0,
                       help="warm-up epochs (warmup_cosine)")
        c.add_argument("--clip", type=_positive(float), help="clip gradients to this global norm")
        c.add_argument("--epochs", type=_positive(int), default=100,
                       help="passes over the training split")
        c.add_argument("--batch-size", type=_positive(int), default=64,
                       help="minibatch size (larger than the data: full batch)")
        c.add_argument("--grad", choices=("backprop", "autodiff"), default="backprop",
                       help="hand-derived backprop or jax.grad")

    t = sub.add_parser("train", help="train a network; writes checkpoint, metrics and a plot",
                       formatter_class=_Help)
    problem_options(t)
    t.add_argument("--lr", type=_positive(float), default=1e-3, help="learning rate")
    t.add_argument("--reg", type=float, default=1e-3, help="L2 strength")
    t.add_argument("--dropout", type=float, default=0.0,
                   help="drop probability of hidden units (0: none)")
    t.add_argument("--input-noise", type=float, default=0.0,
                   help="std of Gaussian noise added to the inputs (0: none)")
    t.add_argument("--eval-every", type=_positive(int), default=10,
                   help="epochs fused into one compiled call between evaluations")
    t.add_argument("--seed", type=_seed, default=0, help="0 to 2**63-1")
    t.add_argument("--out", default=None, help="output directory (default: runs/DATASET)")
    t.add_argument("--resume", action="store_true",
                   help="continue --out's run exactly (only the options that do not change "
                        "its updates may differ)")
    t.add_argument("--overwrite", action="store_true",
                   help="start --out's run again, replacing its checkpoint and metrics")
    t.add_argument("--init-from", metavar="RUN",
                   help="a new run starting from RUN's final params (a run directory or "
                        "checkpoint.npz), with a fresh optimizer state, schedule and history: "
                        "every option may change but the network's shapes")
    t.add_argument("--quiet", action="store_true", help="no progress, no epoch lines")
    t.add_argument("--no-compile-cache", action="store_true", help="compile afresh, keeping "
                   "nothing (also MLP_JAX_COMPILE_CACHE=0)")
    p = t.add_argument_group("data parallel (see README: Scaling out)")
    p.add_argument("--devices", type=_positive(int, zero=True), default=1,
                   help="devices to shard each batch over (0: all, across every process)")
    p.add_argument("--form", choices=("shard_map", "gspmd"), default="shard_map",
                   help="each shard's gradients (--grad) averaged by pmean in shard_map, or "
                        "the ordinary step partitioned by GSPMD (train.FORMS)")
    p.add_argument("--coordinator", help="host:port of process 0 (or MLP_JAX_COORDINATOR)")
    p.add_argument("--num-processes", type=_positive(int), help="processes in the job "
                   "(or MLP_JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=_positive(int, zero=True),
                   help="this process, 0..n-1 (or MLP_JAX_PROCESS_ID)")
    p.add_argument("--dist-timeout", type=_positive(int), default=60,
                   help="seconds to wait for every process to join")
    t.set_defaults(func=_train)

    w = sub.add_parser("sweep", help="train many configurations (seeds x lr x reg x dropout x "
                       "input noise) at once; writes a table, a plot and the best run's "
                       "mlp-jax train command",
                       formatter_class=_Help,
                       description="Train every configuration of a grid (or --random N points "
                       "drawn from the ranges the lists span) as one compiled program per "
                       "chunk, sharded over every core or device. Results are kept as each "
                       "chunk ends; --resume finishes a stopped sweep.")
    problem_options(w)
    w.add_argument("--lr", type=_numbers(float, "learning rates like 1e-3,3e-3", positive=True,
                                         unique=True), default="1e-3", metavar="LRS",
                   help="learning rates, comma-separated")
    w.add_argument("--reg", type=_values(float), default="1e-3", metavar="REGS",
                   help="L2 strengths")
    w.add_argument("--dropout", type=_values(float), default="0", metavar="RATES",
                   help="drop probabilities")
    w.add_argument("--input-noise", type=_values(float), default="0", metavar="STDS",
                   help="Gaussian input noise stds")
    w.add_argument("--seeds", type=_numbers(int, "seeds like 0,1,2", unique=True,
                                            most=MAX_SEED), default="0",
                   help="seeds, e.g. 0,1,2")
    w.add_argument("--random", type=_positive(int), metavar="N",
                   help="instead of the grid, N random points between each list's smallest "
                        "and largest value (lr and reg log-uniform), each run for every seed")
    w.add_argument("--search-seed", type=_seed, default=0, help="seed of the --random points")
    w.add_argument("--devices", type=_positive(int, zero=True), default=0,
                   help="devices to shard the configurations over (0: all; on CPU one per "
                        "core)")
    w.add_argument("--batching", choices=("vmap", "map"),
                   help="within a device: vmap or one after another (default: map on CPU, "
                        "vmap elsewhere)")
    w.add_argument("--chunk", type=_positive(int),
                   help="configurations per compiled call, i.e. between saves of the results "
                        "(default: one per device with map, all with vmap)")
    w.add_argument("--out", default=None,
                   help="output directory (default: runs/sweep-DATASET)")
    w.add_argument("--resume", action="store_true",
                   help="finish the sweep in --out: configurations already done are kept")
    w.add_argument("--overwrite", action="store_true",
                   help="start the sweep in --out again, replacing its results")
    w.add_argument("--quiet", action="store_true", help="no progress, no table")
    w.add_argument("--no-compile-cache", action="store_true", help="compile afresh, keeping "
                   "nothing (also MLP_JAX_COMPILE_CACHE=0)")
    w.set_defaults(func=_sweep)

    which = dict(choices=("best", "final"), default="best",
                 help="the run's best-on-validation params or its final ones")
    e = sub.add_parser("eval", help="evaluate a checkpoint's best params on its dataset",
                       formatter_class=_Help)
    e.add_argument("--checkpoint", required=True, help="a run directory or checkpoint.npz")
    e.add_argument("--params", **which)
    e.add_argument("--dataset", choices=sorted(DATASETS), help="default: the checkpoint's")
    e.add_argument("--data-dir", help="where cifar10's python batches are (default: the "
                   "checkpoint's)")
    e.add_argument("--data", metavar="FILE",
                   help="a labelled .npz or .csv to evaluate on, read and preprocessed as the "
                        "run's training file was (a run trained with --data)")
    e.set_defaults(func=_eval)

    r = sub.add_parser("predict", help="predict labels for a file of your own with a run "
                       "trained on your own data", formatter_class=_Help,
                       description="One CSV row per example: the predicted label (in your "
                       "own label values) and the class probabilities (softmax loss), or "
                       "the scores (other losses). A label column in the file, if any, is "
                       "compared with the predictions.")
    r.add_argument("--checkpoint", required=True, help="a run directory or checkpoint.npz")
    r.add_argument("--params", **which)
    r.add_argument("--data", required=True, metavar="FILE",
                   help="a .npz (array X) or .csv (the training file's feature columns)")
    r.add_argument("--out", metavar="FILE", help="write the CSV here (default: stdout)")
    r.set_defaults(func=_predict)
    return parser


def _supervise(argv: list[str], args) -> int:
    """Run a multi-process worker as a child. The JAX distributed runtime ends a process
    whose peer never joins (or vanishes) from a C++ thread, with a stack trace and no
    Python exception; here that becomes one clear line and exit status 1."""
    import signal
    import subprocess

    from .lifetime import die_with_parent

    env = dict(os.environ, MLP_JAX_WORKER="1")
    proc = subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", *argv], env=env,
                            stderr=subprocess.PIPE, text=True, bufsize=1,
                            preexec_fn=die_with_parent)  # it ends with its supervisor
    fatal, in_fatal = [], False
    for line in proc.stderr:
        if re.match(r"\s*@\s+0x", line) or "Check failure stack trace" in line:
            in_fatal = False  # the runtime's C++ stack trace
            continue
        m = re.match(r"F\d{4} [\d:.]+\s+\d+ [^\]]+\] (.*)", line)
        if m or (in_fatal and line.strip()):
            fatal.append((m.group(1) if m else line).strip())
            in_fatal = True
            continue
        if not in_fatal:
            sys.stderr.write(line)
    code = proc.wait()
    if code in (-signal.SIGABRT, 128 + signal.SIGABRT):
        who = f"process {args.process_id} of {args.num_processes}"
        why = " ".join(fatal)[:400] or "no message"
        print(f"mlp-jax: error: {who}: the JAX distributed runtime stopped it (a peer never "
              f"joined {args.coordinator} within {args.dist_timeout} s, or died): {why}",
              file=sys.stderr)
        return 1
    return code


def _interrupt_message(out: str | None) -> str:
    where = f"; what was saved in {out} stays, and --resume continues it" if out else ""
    return f"mlp-jax: interrupted{where}"


def main(argv=None) -> int:
    """The command line. Run as the program (``argv`` None), Ctrl-C ends it at once, from
    before anything heavy is imported (:func:`lifetime.exit_on_interrupt`); called from
    Python with ``argv``, a handler does the same for the call's length. Either way: one
    line, exit status 130; what was saved stays whole (every write is atomic or re-read
    with --resume; one in flight finishes first)."""
    import signal

    from . import lifetime

    worker = bool(os.environ.get("MLP_JAX_WORKER"))
    program = argv is None and not worker
    if program:
        lifetime.end_with_starter()
    if worker:  # a supervised worker: its supervisor reports, and it ends with it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    elif program:
        lifetime.exit_on_interrupt()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command in ("train", "sweep") and args.out is None:
        name = os.path.splitext(os.path.basename(args.data))[0] if args.data else args.dataset
        args.out = os.path.join("runs", ("sweep-" if args.command == "sweep" else "") + name)
    message = _interrupt_message(getattr(args, "out", None))
    if program:
        lifetime.exit_on_interrupt(message)
    if program or worker:
        return _run(argv, args)

    previous = signal.signal(signal.SIGINT,
                             lambda signum, frame: lifetime.exit_interrupted(message))
    try:
        return _run(argv, args)
    finally:
        signal.signal(signal.SIGINT, previous)


COMPILE_CACHE_MIN_SECONDS = 0.1  # programs that compile faster are not worth a file


def compile_cache_dir() -> str | None:
    """Where compiled programs are kept between runs: ``MLP_JAX_COMPILE_CACHE`` (a
    directory; ``0`` or ``off``: nowhere), else ``$XDG_CACHE_HOME/mlp_jax/xla``
    (``~/.cache/mlp_jax/xla``)."""
    setting = os.environ.get("MLP_JAX_COMPILE_CACHE", "")
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return setting or os.path.join(base, "mlp_jax", "xla")


def _compile_cache(off: bool) -> None:
    """JAX's persistent compilation cache, on by default: a second run of the same shapes
    loads its programs instead of compiling them."""
    where = None if off else compile_cache_dir()
    if where is None:
        return
    try:  # a directory this process cannot write to is a warning, not a failure
        os.makedirs(where, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:
        print(f"mlp-jax: warning: no compilation cache: cannot write to {where} "
              f"({e.strerror or e}); compiling afresh (MLP_JAX_COMPILE_CACHE=DIR moves it, "
              "=0 or --no-compile-cache turns it off)", file=sys.stderr)
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECONDS)


def _run(argv, args) -> int:
    if (getattr(args, "num_processes", None) or 1) > 1 and not os.environ.get("MLP_JAX_WORKER"):
        return _supervise(argv, args)
    from .lifetime import release_directories
    from .parallel import PeerFailure

    _compile_cache(getattr(args, "no_compile_cache", False))
    try:
        code = args.func(args)
    except UsageError as e:
        print(f"mlp-jax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system failed mid-run (disk full, permissions, ...)
        where = f" {e.filename}" if e.filename else ""
        print(f"mlp-jax: error: cannot write{where}: {e.strerror or e}; what was saved "
              "before is intact (free space or fix permissions, then --resume)",
              file=sys.stderr)
        return 1
    except PeerFailure as e:
        # The distributed runtime's own shutdown would now wait on the lost peer and
        # abort with a C++ trace; say what happened in one line and leave at once.
        print(f"mlp-jax: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    finally:
        release_directories()  # the command is over (main may be called again in-process)
    if getattr(args, "num_processes", None) and args.num_processes > 1:
        import jax

        jax.distributed.shutdown()  # every process reaches here: a clean, joint exit
    return code


if __name__ == "__main__":
    sys.exit(main())
