"""The ``mlp-jax`` command line: ``train``, ``eval`` and ``gradcheck``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np


def _gradcheck(args) -> int:
    from . import gradcheck as gc
    from .gradmatrix import MATRIX_DEPTHS, check_matrix, random_sweep

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

    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0; got {args.seed}")
    if args.random:
        what = "checking random configurations"
        results = random_sweep(args.random, seed=args.seed, draws=args.draws,
                               workers=args.workers, progress=progress)
        depths = sorted({r["depth"] for r in results})
        title = (f"Random sweep of correct code: {len(results)} problems over "
                 f"{-(-len(results) // args.draws)} configurations (seed {args.seed}); "
                 "failed / checked per cell\n(depths 1-6, widths 3-40, batch 1-64, reg, "
                 "dropout, input noise, maxout pieces, bias or not; half the problems have a "
                 "row exactly on the kinks)")
    else:
        what = "checking cells"
        results = check_matrix(workers=args.workers, progress=progress)
        depths = MATRIX_DEPTHS
        title = ("The matrix: every activation x loss x depth 1-4 x reg {0, 0.1} x dropout "
                 "{0, 0.3}; float64; depth 1 is the linear classifier\n"
                 "each entry: worst CS231n relative error vs jax.grad / vs finite differences, "
                 "'!' where a cell failed")
    if tty:
        print(file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)

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


class UsageError(Exception):
    """A bad option or configuration: reported in one line, exit status 2."""


SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup_cosine")


def _hidden(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated widths like 100 or 256,128 (or none); got {text!r}"
        ) from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"widths must be positive; got {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
        return value
    return parse


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
    from .losses import BINARY01, BINARY_PM1

    kind = spec.loss_fn.labels
    if kind not in (BINARY01, BINARY_PM1):
        return ds
    lo = 0 if kind == BINARY01 else -1
    return ds._replace(**{k: None if getattr(ds, k) is None else
                          np.where(getattr(ds, k) == 1, 1, lo).astype(np.int32)
                          for k in ("y_train", "y_val", "y_test")})


def _train(args) -> int:
    from . import parallel

    try:  # before any other JAX work
        distributed = parallel.initialize(args.coordinator, args.num_processes, args.process_id,
                                          timeout=args.dist_timeout)
    except ValueError as e:
        raise UsageError(str(e)) from e
    import jax

    from . import data, train
    from .checkpoint import load_params
    from .spec import MLPSpec

    lead = jax.process_index() == 0  # only process 0 writes files and talks
    args.quiet = args.quiet or not lead

    try:
        ds = data.load(args.dataset, args.data_dir)
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from e
    loss_labels = {"logistic": (0, 1), "hinge": (-1, 1)}
    if args.loss in loss_labels and ds.num_classes != 2:
        raise UsageError(f"--loss {args.loss} is binary but {args.dataset} has "
                         f"{ds.num_classes} classes")
    if args.loss == "squared":
        raise UsageError("--loss squared needs real-valued targets; the CLI's datasets are "
                         "classification (use softmax, svm, or the library API)")
    C = 1 if args.loss in loss_labels else ds.num_classes
    try:
        spec = MLPSpec((ds.X_train.shape[1], *args.hidden, C), activation=args.activation,
                       loss=args.loss, reg=args.reg, dropout=args.dropout,
                       input_noise=args.input_noise, init=args.init)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from e
    ds = _binary_labels(ds, spec)

    batch_size = args.batch_size or len(ds.X_train)
    per_epoch = train.steps_per_epoch(len(ds.X_train), batch_size)
    try:
        opt = build_optimizer(args.optimizer, args.lr, args.schedule,
                              total_steps=args.epochs * per_epoch, steps_per_epoch=per_epoch,
                              lr_decay=args.lr_decay, warmup_steps=args.warmup * per_epoch,
                              clip=args.clip)
    except ValueError as e:
        raise UsageError(f"{e} (from --lr, --lr-decay, --clip or --schedule)") from e
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "checkpoint.npz")
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config["hidden"] = list(args.hidden)
    if os.path.exists(ckpt_path) and not args.resume and lead:
        raise UsageError(f"{ckpt_path} exists: pass --resume to continue it, or choose "
                         "another --out")
    rows = load_params(ckpt_path).history if args.resume and os.path.exists(ckpt_path) else []
    if lead:
        with open(metrics_path, "w") as f:  # rewritten from the checkpoint on resume
            f.writelines(json.dumps(r) + "\n" for r in rows)

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
    t0 = time.perf_counter()
    try:
        result = train.fit(spec, ds, opt, epochs=args.epochs, batch_size=batch_size,
                           key=jax.random.key(args.seed), grad=args.grad,
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
    summary = _summarize(result.state.params, ds, spec)
    if ds.X_val is not None:
        summary.update({f"best_val_params_{k}": v for k, v in
                        _summarize(result.best_params, ds, spec).items() if k.endswith("acc")})
    summary["seconds"] = round(elapsed, 2)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plot = _plot(result.history, os.path.join(args.out, "curves.png"), ds.describe())
    if not args.quiet:
        final = " ".join(f"{k} {v:.4f}" for k, v in summary.items()
                         if k.endswith("acc") and not k.startswith("best"))
        print(f"final params: {final}")
        if ds.X_val is not None:
            best = " ".join(f"{k[16:]} {v:.4f}" for k, v in summary.items() if k.startswith("best"))
            print(f"best-on-validation params: {best}")
        print(f"{elapsed:.1f} s; wrote {ckpt_path}, {metrics_path}"
              + (f", {plot}" if plot else " (pip install 'mlp_jax[plot]' for curves.png)"))
    return 0


def _summarize(params, ds, spec) -> dict:
    from .train import evaluate

    out = {}
    for split in ("train", "val", "test"):
        X = getattr(ds, f"X_{split}")
        if X is not None:
            loss, acc = evaluate(params, X, getattr(ds, f"y_{split}"), spec)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _eval(args) -> int:
    from . import data
    from .checkpoint import CheckpointError, load_params

    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.npz")
    try:
        ck = load_params(path)
    except CheckpointError as e:
        raise UsageError(str(e)) from e
    config = ck.meta.get("config", {})
    name = args.dataset or config.get("dataset")
    if not name:
        raise UsageError("the checkpoint does not say its dataset: pass --dataset")
    try:
        ds = data.load(name, args.data_dir or config.get("data_dir"))
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from e
    ds = _binary_labels(ds, ck.spec)
    summary = _summarize(ck.state, ds, ck.spec)
    print(f"{path}: {ds.describe()}, network {ck.spec.sizes} {ck.spec.activation_name}")
    print(" ".join(f"{k} {v:.4f}" for k, v in summary.items()))
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments: a one-line error and exit status 2, never a traceback."""

    def error(self, message):
        self.exit(2, f"mlp-jax: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlp-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    g = sub.add_parser("gradcheck", help="check hand backprop against jax.grad and finite "
                       "differences over every activation x loss x depth x reg x dropout, "
                       "or over random problems (--random N)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--workers", type=_positive(int), default=2, help="processes to use")
    g.add_argument("--random", type=_positive(int), metavar="N",
                   help="instead of the matrix, check N random problems of correct code and "
                        "count false alarms")
    g.add_argument("--seed", type=int, default=0, help="seed of the random configurations")
    g.add_argument("--draws", type=_positive(int), default=4,
                   help="random problems per configuration (one compile serves them)")
    g.add_argument("--json", metavar="FILE", help="also write every cell's result to FILE")
    g.add_argument("--quiet", action="store_true", help="no progress counter")
    g.set_defaults(func=_gradcheck)

    from .activations import ACTIVATION_NAMES
    from .data import DATASETS
    from .losses import LOSS_NAMES
    from .optim import OPTIMIZERS
    from .spec import INITS

    t = sub.add_parser("train", help="train a network; writes checkpoint, metrics and a plot")
    t.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    t.add_argument("--data-dir", help="where cifar10's python batches are")
    t.add_argument("--hidden", type=_hidden, default=(256,),
                   help="hidden widths, comma-separated (default 256; 'none': linear classifier)")
    t.add_argument("--activation", choices=ACTIVATION_NAMES, default="relu")
    t.add_argument("--loss", choices=LOSS_NAMES, default="softmax")
    t.add_argument("--init", choices=INITS, default="he")
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    t.add_argument("--lr", type=_positive(float), default=1e-3, help="learning rate")
    t.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    t.add_argument("--lr-decay", type=_positive(float), default=0.95,
                   help="per-epoch factor of the step and exponential schedules")
    t.add_argument("--warmup", type=int, default=0, help="warm-up epochs (warmup_cosine)")
    t.add_argument("--clip", type=_positive(float), help="clip gradients to this global norm")
    t.add_argument("--reg", type=float, default=1e-3, help="L2 strength")
    t.add_argument("--dropout", type=float, default=0.2, help="drop probability")
    t.add_argument("--input-noise", type=float, default=0.2, help="Gaussian input noise std")
    t.add_argument("--epochs", type=_positive(int), default=100)
    t.add_argument("--batch-size", type=_positive(int), default=64,
                   help="minibatch size (larger than the data: full batch)")
    t.add_argument("--eval-every", type=_positive(int), default=10,
                   help="epochs fused into one compiled call between evaluations")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--grad", choices=("backprop", "autodiff"), default="backprop",
                   help="hand-derived backprop or jax.grad")
    t.add_argument("--out", default=None, help="output directory (default runs/DATASET)")
    t.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress, no epoch lines")
    p = t.add_argument_group("data parallel (see README: Scaling out)")
    p.add_argument("--devices", type=int, default=1,
                   help="devices to shard each batch over (0: all, across every process)")
    p.add_argument("--form", choices=("shard_map", "gspmd"), default="shard_map",
                   help="each shard's gradients (--grad) averaged by pmean in shard_map, or "
                        "the ordinary step partitioned by GSPMD (train.FORMS)")
    p.add_argument("--coordinator", help="host:port of process 0 (or MLP_JAX_COORDINATOR)")
    p.add_argument("--num-processes", type=int, help="processes in the job "
                   "(or MLP_JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, help="this process, 0..n-1 (or MLP_JAX_PROCESS_ID)")
    p.add_argument("--dist-timeout", type=_positive(int), default=60,
                   help="seconds to wait for every process to join")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint's best params on its dataset")
    e.add_argument("--checkpoint", required=True, help="a run directory or checkpoint.npz")
    e.add_argument("--dataset", choices=sorted(DATASETS), help="default: the checkpoint's")
    e.add_argument("--data-dir")
    e.set_defaults(func=_eval)
    return parser


def _supervise(argv: list[str], args) -> int:
    """Run a multi-process worker as a child. The JAX distributed runtime ends a process
    whose peer never joins (or vanishes) from a C++ thread, with a stack trace and no
    Python exception; here that becomes one clear line and exit status 1."""
    import signal
    import subprocess

    env = dict(os.environ, MLP_JAX_WORKER="1")
    proc = subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", *argv], env=env,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
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


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if (getattr(args, "num_processes", None) or 1) > 1 and not os.environ.get("MLP_JAX_WORKER"):
        return _supervise(argv, args)
    if getattr(args, "out", "unset") is None:
        args.out = os.path.join("runs", args.dataset)
    from .parallel import PeerFailure

    try:
        code = args.func(args)
    except UsageError as e:
        print(f"mlp-jax: error: {e}", file=sys.stderr)
        return 2
    except PeerFailure as e:
        # The distributed runtime's own shutdown would now wait on the lost peer and
        # abort with a C++ trace; say what happened in one line and leave at once.
        print(f"mlp-jax: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    if getattr(args, "num_processes", None) and args.num_processes > 1:
        import jax

        jax.distributed.shutdown()  # every process reaches here: a clean, joint exit
    return code


if __name__ == "__main__":
    sys.exit(main())
