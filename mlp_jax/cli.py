"""The ``mlp-jax`` command line: ``mlp-jax gradcheck`` (more subcommands in later modules)."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _gradcheck(args) -> int:
    from .gradcheck import MATRIX_DEPTHS, TOL_AUTODIFF, TOL_FD, check_matrix

    t0 = time.perf_counter()
    tty = sys.stderr.isatty() and not args.quiet

    def progress(done, total):
        if tty:
            print(f"\rchecking cells: {done}/{total}", end="", file=sys.stderr, flush=True)

    results = check_matrix(workers=args.workers, progress=progress)
    if tty:
        print(file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)

    losses = list(dict.fromkeys(r["loss"] for r in results))
    acts = list(dict.fromkeys(r["activation"] for r in results))
    worst = {}
    for r in results:
        key = (r["activation"], r["depth"], r["loss"])
        ad, fd, ok = worst.get(key, (0.0, 0.0, True))
        worst[key] = (max(ad, r["autodiff"]), max(fd, r["fd"]), ok and r["passed"])
    print("Hand backprop vs jax.grad / vs finite differences: worst relative error per cell")
    print("(each entry is the worst over reg in {0, 0.1} x dropout in {0, 0.3}; float64;"
          " depth 1 is the linear classifier)")
    header = f"{'activation':<11}{'depth':>5}  " + "".join(f"{name:>21}" for name in losses)
    print(header)
    print("-" * len(header))
    for act in acts:
        for depth in MATRIX_DEPTHS:
            row = f"{act:<11}{depth:>5}  "
            for name in losses:
                ad, fd, ok = worst[(act, depth, name)]
                row += f"{ad:>9.1e} / {fd:>7.1e}{' ' if ok else '!'}"
            print(row)
    failed = [r for r in results if not r["passed"]]
    ad = max(r["autodiff"] for r in results)
    fd = max(r["fd"] for r in results)
    kinks = sum(r["kink_entries"] for r in results)
    print(f"\n{len(results)} cells, {len(failed)} failed ('!'); worst vs jax.grad {ad:.2e} "
          f"(threshold {TOL_AUTODIFF:g}), worst vs finite differences {fd:.2e} "
          f"(threshold {TOL_FD:g}); {kinks} finite-difference entries straddled a kink and "
          f"were compared with jax.grad only; {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments: a one-line error and exit status 2, never a traceback."""

    def error(self, message):
        self.exit(2, f"mlp-jax: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlp-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    g = sub.add_parser("gradcheck", help="check hand backprop against jax.grad and finite "
                       "differences over every activation x loss x depth x reg x dropout")
    g.add_argument("--workers", type=int, default=2, help="processes to use (default 2)")
    g.add_argument("--json", metavar="FILE", help="also write every cell's result to FILE")
    g.add_argument("--quiet", action="store_true", help="no progress counter")
    g.set_defaults(func=_gradcheck)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
