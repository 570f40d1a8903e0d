"""``mlp-jax train``: one run in ``--out`` (checkpoint, metrics, summary, curves), resumed
exactly with ``--resume`` or started from another run's params with ``--init-from``."""

from __future__ import annotations

import json
import os
import sys
import time

from . import common, plots
from .common import RUN_FIXED, UsageError, load_run
from .options import Help, positive, problem_options, run_options, seed

RUN_FILES = ("checkpoint.npz", "metrics.jsonl", "summary.json", "curves.png")  # train's


def _train(args) -> int:
    from .. import parallel
    from .profile import Profile

    profile = Profile(args.profile)

    try:  # before any other JAX work
        distributed = parallel.initialize(args.coordinator, args.num_processes, args.process_id,
                                          timeout=args.dist_timeout)
    except ValueError as e:
        raise UsageError(str(e)) from e
    import jax

    from .. import checkpoint, lifetime, train

    lead = jax.process_index() == 0  # only process 0 writes files and talks
    args.quiet = args.quiet or not lead

    ds, make_spec, batch_size = common.problem(args)
    spec = make_spec(args.reg, args.dropout, args.input_noise)
    per_epoch = train.steps_per_epoch(len(ds.X_train), batch_size)
    opt = common.optimizer(args, args.lr, len(ds.X_train))
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
    state = None
    if args.init_from:  # a new run from another's final params
        ck = load_run(args.init_from, which="final")[1]
        try:
            state = train.init_state_from(jax.random.key(args.seed), spec, opt, ck.params,
                                          ck.stats)
        except ValueError as e:
            raise UsageError(f"--init-from {args.init_from}: {e}: give the same --hidden, "
                             "--activation (maxout's pieces) and --norm") from None
    saved = False
    if args.resume:  # read once, here (its directory held first); fit restores the state
        if lead:
            common.make_out(args.out)
        try:
            saved = checkpoint.read(ckpt_path)
        except checkpoint.CheckpointError as e:
            raise UsageError(f"cannot resume: {e}") from e
        common.refuse_changes(f"the run in {args.out}", saved.meta.get("config", {}), config,
                              RUN_FIXED, f"--init-from {args.out} --out NEW to start a new "
                              "run from its params")
    started = False

    def start(history):  # fit's checks passed: the run's description and files from here on
        nonlocal started
        started = True
        if not args.quiet:
            print(f"{ds.describe()}\nnetwork {spec.sizes}, {spec.activation_name}, "
                  f"{spec.loss_fn.name}, {args.optimizer} lr {args.lr} ({args.schedule}), "
                  f"{args.epochs} epochs of {per_epoch} steps (batch {batch_size}), "
                  f"grad={args.grad}", flush=True)
            if mesh is not None:
                print(f"data parallel over {mesh.shape['data']} devices "
                      f"({jax.process_count()} processes), form {args.form}", flush=True)
        if not lead:
            return
        if not args.resume:
            common.make_out(args.out)
        if args.overwrite:  # the old run goes first, whole (an interrupt waits for it)
            with lifetime.whole_write():
                for name in RUN_FILES:
                    if os.path.exists(os.path.join(args.out, name)):
                        os.remove(os.path.join(args.out, name))
        # rewritten from the checkpoint on resume
        common.write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in history))

    def log(state, row):
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if not args.quiet and not sys.stderr.isatty():
            val = f", val acc {row['val_acc']:.4f}" if "val_acc" in row else ""
            print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, "
                  f"train acc {row['train_acc']:.4f}{val}", flush=True)

    mesh = None
    if distributed or args.devices != 1:
        try:
            mesh = parallel.data_mesh(args.devices if args.devices else None)
        except ValueError as e:
            raise UsageError(str(e)) from e
    if mesh is None:  # the data on the device, one array at a time, each numpy copy freed
        for k in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
            if getattr(ds, k) is not None:
                ds = ds._replace(**{k: jax.device_put(getattr(ds, k))})
    profile.mark("mlp_jax's modules and the data: loaded, on the device")
    t0 = time.perf_counter()
    try:
        result = train.fit(spec, ds, opt, epochs=args.epochs, batch_size=batch_size,
                           key=jax.random.key(args.seed), state=state, grad=args.grad,
                           eval_every=args.eval_every, checkpoint_path=ckpt_path,
                           resume=saved, meta={"config": config}, on_start=start,
                           progress=False if args.quiet else None,
                           callbacks=[log] if lead else [], mesh=mesh, form=args.form)
    except train.TrainingDiverged as e:
        print(f"mlp-jax: training stopped: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:
        if started:
            raise
        raise UsageError(common.usage(e)) from None  # fit's checks: the options or the data
    elapsed = time.perf_counter() - t0
    profile.mark("fit: its checks, compiling, training, evaluating per epoch")
    if not lead:
        return 0
    splits = train.splits_of(ds)
    summary = train.evaluate_splits(result.state.params, spec, splits, stats=result.state.stats)
    if ds.X_val is not None:  # evaluated again only where the best params are not the final
        same = result.best_params is result.state.params and result.best_stats is result.state.stats
        best = dict(summary) if same else train.evaluate_splits(
            result.best_params, spec, splits, stats=result.best_stats)
        summary.update({f"best_val_params_{k}": v for k, v in best.items() if k.endswith("acc")})
    summary["seconds"] = round(elapsed, 2)
    common.write_text(os.path.join(args.out, "summary.json"), json.dumps(summary, indent=1))
    # the result first, --quiet or not; the plot (matplotlib's import alone is ~1 s) after
    final = " ".join(f"{k} {v:.4f}" for k, v in summary.items()
                     if k.endswith("acc") and not k.startswith("best"))
    print(f"final params: {final}", flush=True)
    if ds.X_val is not None:
        best = " ".join(f"{k[16:]} {v:.4f}" for k, v in summary.items() if k.startswith("best"))
        print(f"best-on-validation params: {best}", flush=True)
    profile.mark("the final params evaluated, summary.json written")
    plot = plots.curves(result.history, os.path.join(args.out, "curves.png"), ds.describe())
    print(f"{elapsed:.1f} s; wrote {ckpt_path}, {metrics_path}"
          + (f", {plot}" if plot else " (pip install 'mlp_jax[plot]' for curves.png)"))
    profile.mark("curves.png drawn (matplotlib)")
    profile.report()
    return 0


def add_parser(sub, full) -> None:
    t = sub.add_parser("train", help="train a network; writes checkpoint, metrics and a plot",
                       formatter_class=Help)
    if not full("train"):  # listed only (cli.build_parser)
        return
    problem_options(t)
    t.add_argument("--lr", type=positive(float), default=1e-3, help="learning rate")
    t.add_argument("--reg", type=float, default=1e-3, help="L2 strength")
    t.add_argument("--dropout", type=float, default=0.0,
                   help="drop probability of hidden units (0: none)")
    t.add_argument("--input-noise", type=float, default=0.0,
                   help="std of Gaussian noise added to the inputs (0: none)")
    t.add_argument("--eval-every", type=positive(int), default=10,
                   help="epochs fused into one compiled call between evaluations")
    t.add_argument("--seed", type=seed, default=0, help="0 to 2**63-1")
    run_options(t, out="runs/DATASET",
                resume="continue --out's run exactly (only the options that do not change "
                       "its updates may differ)",
                overwrite="start --out's run again, replacing its checkpoint and metrics",
                quiet="no progress, no epoch lines")
    t.add_argument("--profile", action="store_true",
                   help="after the result, print where the run's seconds went (stderr)")
    t.add_argument("--init-from", metavar="RUN",
                   help="a new run starting from RUN's final params (a run directory or "
                        "checkpoint.npz), with a fresh optimizer state, schedule and history: "
                        "every option may change but the network's shapes")
    p = t.add_argument_group("data parallel (see README: Scaling out)")
    p.add_argument("--devices", type=positive(int, zero=True), default=1,
                   help="devices to shard each batch over (0: all, across every process)")
    p.add_argument("--form", choices=("shard_map", "gspmd"), default="shard_map",
                   help="each shard's gradients (--grad) averaged by pmean in shard_map, or "
                        "the ordinary step partitioned by GSPMD (train.FORMS)")
    p.add_argument("--coordinator", help="host:port of process 0 (or MLP_JAX_COORDINATOR)")
    p.add_argument("--num-processes", type=positive(int), help="processes in the job "
                   "(or MLP_JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=positive(int, zero=True),
                   help="this process, 0..n-1 (or MLP_JAX_PROCESS_ID)")
    p.add_argument("--dist-timeout", type=positive(int), default=60,
                   help="seconds to wait for every process to join")
    t.set_defaults(func=_train)
