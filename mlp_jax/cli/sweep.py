"""``mlp-jax sweep``: many configurations as one compiled program per chunk; a table, a
plot and the best one's ``mlp-jax train`` command; ``--resume`` finishes a stopped sweep."""

from __future__ import annotations

import json
import os
import sys
import time

from . import plots
from .common import (
    SWEEP_AXES,
    SWEEP_FIXED,
    UsageError,
    make_out,
    optimizer,
    problem,
    refuse_changes,
    usage,
    write_text,
)
from .options import MAX_SEED, Help, numbers, positive, problem_options, run_options, seed, values


def _sweep_configs(args) -> list[dict]:
    from .. import sweep

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



def _sweep(args) -> int:
    from .. import parallel

    parallel.use_every_core()  # before JAX's first operation: a device per core on CPU
    import jax

    from .. import sweep, train
    from ..spec import Hyper

    configs = _sweep_configs(args)
    ds, make_spec, batch_size = problem(args)
    for c in configs:  # every value checked before anything runs
        make_spec(c["reg"], c["dropout"], c["input_noise"])
    try:  # fit's guards, before anything is written (the sweep runs them again)
        train.check_run(make_spec(0, 0, 0), ds, epochs=args.epochs, batch_size=batch_size)
    except (ValueError, TypeError) as e:
        raise UsageError(usage(e)) from None
    splits = train.splits_of(ds, ("train", "val"))  # the test split: never while choosing
    optimizer(args, max(args.lr), len(ds.X_train))
    try:
        mesh = sweep.config_mesh(args.devices or None)
    except ValueError as e:
        raise UsageError(f"--devices {args.devices}: {e}") from e
    mesh = mesh if mesh.shape["config"] > 1 else None
    batching = args.batching or sweep.BATCHING.get(jax.default_backend(), "vmap")
    chunk = args.chunk or (None if batching == "vmap" else len(mesh.devices.flat) if mesh
                           else 1)

    make_out(args.out)
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
        refuse_changes(f"the sweep in {args.out}", before, fixed, SWEEP_FIXED,
                        "another --out for a new sweep")
        with open(paths["results.jsonl"]) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a crash: that config runs again
                    continue
                done[tuple(row[k] for k in SWEEP_AXES)] = row
        # without a line a crash cut short, which the next append would run into
        write_text(paths["results.jsonl"], "".join(json.dumps(r) + "\n"
                                                      for r in done.values()))
    else:
        write_text(paths["options.json"], json.dumps(fixed, indent=1))

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
            row.update(train.evaluate_splits(part.params_of(i), spec, splits,
                                             Hyper(*key(c)[2:]), part.stats_of(i)))
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
            sweep.sweep(spec, ds, lambda lr: optimizer(args, lr, len(ds.X_train)), group,
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
    write_text(paths["sweep.csv"], ",".join(columns) + "\n" + "".join(
        ",".join(str(r[k]) for k in columns) + "\n" for r in rows))
    write_text(paths["sweep.json"], json.dumps(
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
    plot = plots.sweep(rows, metric, paths["sweep.png"], f"{ds.describe()}: {len(rows)} "
                       "configurations")  # after the result: matplotlib's import is slow
    if not args.quiet:
        print(f"{elapsed:.1f} s; wrote {paths['sweep.csv']}, {paths['sweep.json']}"
              + (f", {plot}" if plot else " (pip install 'mlp_jax[plot]' for sweep.png)"))
    if best["diverged"]:
        print(f"mlp-jax: every configuration diverged (results in {args.out}): lower the "
              "learning rates", file=sys.stderr)
        return 1
    return 0


def add_parser(sub, full) -> None:
    w = sub.add_parser("sweep", help="train many configurations (seeds x lr x reg x dropout x "
                       "input noise) at once; writes a table, a plot and the best run's "
                       "mlp-jax train command",
                       formatter_class=Help,
                       description="Train every configuration of a grid (or --random N points "
                       "drawn from the ranges the lists span) as one compiled program per "
                       "chunk, sharded over every core or device. Results are kept as each "
                       "chunk ends; --resume finishes a stopped sweep.")
    if not full("sweep"):  # listed only (cli.build_parser)
        return
    problem_options(w)
    w.add_argument("--lr", type=numbers(float, "learning rates like 1e-3,3e-3", positive=True,
                                         unique=True), default="1e-3", metavar="LRS",
                   help="learning rates, comma-separated")
    w.add_argument("--reg", type=values(float), default="1e-3", metavar="REGS",
                   help="L2 strengths")
    w.add_argument("--dropout", type=values(float), default="0", metavar="RATES",
                   help="drop probabilities")
    w.add_argument("--input-noise", type=values(float), default="0", metavar="STDS",
                   help="Gaussian input noise stds")
    w.add_argument("--seeds", type=numbers(int, "seeds like 0,1,2", unique=True,
                                            most=MAX_SEED), default="0",
                   help="seeds, e.g. 0,1,2")
    w.add_argument("--random", type=positive(int), metavar="N",
                   help="instead of the grid, N random points between each list's smallest "
                        "and largest value (lr and reg log-uniform), each run for every seed")
    w.add_argument("--search-seed", type=seed, default=0, help="seed of the --random points")
    w.add_argument("--devices", type=positive(int, zero=True), default=0,
                   help="devices to shard the configurations over (0: all; on CPU one per "
                        "core)")
    w.add_argument("--batching", choices=("vmap", "map"),
                   help="within a device: vmap or one after another (default: map on CPU, "
                        "vmap elsewhere)")
    w.add_argument("--chunk", type=positive(int),
                   help="configurations per compiled call, i.e. between saves of the results "
                        "(default: one per device with map, all with vmap)")
    run_options(w, out="runs/sweep-DATASET",
                resume="finish the sweep in --out: configurations already done are kept",
                overwrite="start the sweep in --out again, replacing its results",
                quiet="no progress, no table")
    w.set_defaults(func=_sweep)
