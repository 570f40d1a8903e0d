"""``mlp-jax gradcheck``: the hand backprop over the matrix or random problems, or the
derivative of a function of your own (``--function``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .common import UsageError, writable, write_text
from .options import Help, positive, seed


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

    from ..derivative import DerivativeInputError, check_derivative

    if not args.shapes:
        raise UsageError("--function needs --shapes: one shape per argument, e.g. 8,3 3")
    f = _load_function(args.function)
    results = []
    complex_ = args.dtype.startswith("complex")
    for draw in range(args.draws):
        rng = np.random.default_rng((args.seed, draw))
        inputs = [args.scale * (rng.normal(size=shape) + 1j * rng.normal(size=shape)
                                if complex_ else rng.normal(size=shape))
                  for shape in args.shapes]
        with jax.enable_x64(True):
            inputs = [jax.numpy.asarray(a, args.dtype) for a in inputs]
            try:
                report = check_derivative(f, *inputs, seed=draw, name=args.function,
                                          rtol=args.rtol, atol=args.atol, order=args.order,
                                          batched=args.batched, repeats=args.repeats)
            except DerivativeInputError as e:
                raise UsageError(f"--function {args.function}: {e}") from None
        results.append(report)
        order = f" (order {report.failed_order})" if report.failed_order else ""
        print(f"draw {draw}: {report.verdict}{order}, worst share of the allowance "
              f"{report.used:.2g}, measured error {report.error:.1e}, {report.kinks} entries "
              "on a kink", flush=True)
    worst = max(results, key=lambda r: (r.failed, not r.passed, r.used))
    print(f"\nthe {'closest' if worst.passed else 'first ' + worst.verdict.lower()} draw:"
          f"\n{worst}")
    failed = sum(r.failed for r in results)
    undecided = sum(r.verdict == "UNDECIDED" for r in results)
    print(f"{len(results)} draws at {args.dtype}, {failed} failed"
          + (f", {undecided} undecided" if undecided else ""))
    return 1 if failed or undecided else 0


def _gradcheck(args) -> int:
    from .. import gradcheck as gc
    from ..gradmatrix import MATRIX_DEPTHS, check_matrix, random_sweep

    writable(args.json)
    if args.function:
        return _check_function(args)
    if args.shapes or args.dtype != "float64" or args.rtol or args.atol or args.order != 1 \
            or not args.batched or args.repeats != 1:
        raise UsageError("--shapes, --dtype, --rtol, --atol, --order, --no-batched and "
                         "--repeats go with --function")

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
        write_text(args.json, json.dumps(results, indent=1))

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
    print(f"\n{gc.RULE}")

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



def add_parser(sub, full) -> None:
    g = sub.add_parser("gradcheck", help="check hand backprop against jax.grad and finite "
                       "differences over every activation x loss x depth x reg x dropout, "
                       "or over random problems (--random N)",
                       formatter_class=Help)
    if not full("gradcheck"):  # listed only (cli.build_parser)
        return
    g.add_argument("--workers", type=positive(int), default=2, help="processes to use")
    g.add_argument("--random", type=positive(int), metavar="N",
                   help="instead of the matrix, check N random problems of correct code and "
                        "count false alarms")
    g.add_argument("--seed", type=seed, default=0, help="seed of the random configurations")
    g.add_argument("--draws", type=positive(int), default=4,
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
    u.add_argument("--dtype", choices=("float64", "float32", "float16", "bfloat16",
                                        "complex128", "complex64"),
                   default="float64", help="precision of the inputs (complex: real and "
                                           "imaginary parts random)")
    u.add_argument("--rtol", type=positive(float),
                   help="the rule's stated accuracy, for rules approximate by design (an ODE "
                        "adjoint, an iterative solver): relative, normwise")
    u.add_argument("--atol", type=positive(float), help="the rule's stated absolute accuracy")
    u.add_argument("--order", type=int, choices=(1, 2, 3, 4), default=1,
                   help="check derivatives up to this order (2: the rule's own derivative)")
    u.add_argument("--no-batched", dest="batched", action="store_false",
                   help="skip the rule under jax.vmap and jax.jit (faster)")
    u.add_argument("--repeats", type=positive(int), default=1,
                   help="run the rule this many times and allow for their spread (a "
                        "nondeterministic rule)")
    u.add_argument("--scale", type=positive(float), default=1.0,
                   help="standard deviation of the random inputs")
    g.set_defaults(func=_gradcheck)
