"""check_derivative on the rules beyond exact first derivatives, against jax.test_util.

    python -m experiments.derivative_options           # every case, one draw (~8 min)
    python -m experiments.derivative_options --quick   # a few cases (the test suite)

The corpus (experiments/derivative_options_corpus.py): rules approximate by design
(ODE adjoints, a Neumann-series implicit backward and conjugate gradients at several
tolerances, backwards in lower precision) with their stated rtol, second derivatives
(order=2), complex rules, and batching rules, each correct and wrong as people get them
wrong. ``jax.test_util.check_grads`` runs on the same rule with the same stated
accuracy (``atol = rtol = stated``; its own defaults where none is stated) and the same
order, reverse mode. Also measured: what order=2 and the vmap/jit row cost.
Writes experiments/results/derivative_options.json and the README's table.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.test_util
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments import derivative_options_corpus as corpus  # noqa: E402
from experiments.common import quick_mode, write_json, write_readme_block  # noqa: E402
from experiments.derivatives import attached  # noqa: E402

QUICK = quick_mode()
DRAWS = 1
KINDS = {"approximate": (corpus.APPROXIMATE, corpus.APPROXIMATE_WRONG),
         "second order": (corpus.SECOND, corpus.SECOND_WRONG),
         "complex": (corpus.COMPLEX, corpus.COMPLEX_WRONG),
         "batching": (corpus.BATCHING, corpus.BATCHING_WRONG)}


def anchor(f, args, options) -> bool | None:
    """jax.test_util.check_grads of the same rule, order and stated accuracy."""
    g, diff = attached(f, args, options)
    tol = options.get("rtol")
    try:
        jax.test_util.check_grads(g, tuple(diff), order=options.get("order", 1),
                                  modes=("rev",), atol=tol, rtol=tol)
        return True
    except AssertionError:
        return False
    except Exception:  # noqa: BLE001 (it cannot run this case at all)
        return None


def run_case(case, draw: int) -> dict:
    with jax.enable_x64(True):
        f, args, options = case.make(np.random.default_rng((draw, 7)))
        first = dict(options, order=1, batched=False)
        mj.check_derivative(f, *args, **first)  # compiles what every form shares
        t0 = time.perf_counter()
        mj.check_derivative(f, *args, **first)
        seconds_first = time.perf_counter() - t0
        unbatched = mj.check_derivative(f, *args, **options, batched=False)  # compiles
        t0 = time.perf_counter()
        mj.check_derivative(f, *args, **options, batched=False)
        seconds_unbatched = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = mj.check_derivative(f, *args, **options)
        seconds = time.perf_counter() - t0
        anchor_passed = anchor(f, args, options)
    return {"name": case.name, "kind": case.kind, "wrong": bool(case.wrong), "draw": draw,
            "verdict": report.verdict, "used": report.used, "error": report.error,
            "failed_order": report.failed_order, "unbatched_verdict": unbatched.verdict,
            "jax_check_grads": anchor_passed, "seconds": seconds,
            "seconds_unbatched": seconds_unbatched, "seconds_order_1": seconds_first}


def main():
    rows = []
    for kind, (right, wrong) in KINDS.items():
        for case in (right[:2] + wrong[:2] if QUICK else right + wrong):
            for draw in range(DRAWS):
                rows.append(run_case(case, draw))
                r = rows[-1]
                print(f"{kind:<13} {r['verdict']:<9} anchor {r['jax_check_grads']!s:<5} "
                      f"{r['seconds']:5.1f} s  {case.name}", flush=True)
            jax.clear_caches()
    r = {"draws": DRAWS, "rows": rows}
    path = write_json("derivative_options", r, QUICK)
    if not QUICK:
        write_readme_block("derivative_options", readme(r))
    print(readme(r))
    print("wrote", path)


def readme(r) -> str:
    rows = r["rows"]
    out = ["| kind | correct draws | false alarms: check_derivative / check_grads | "
           "undecided | wrong draws | caught: check_derivative / check_grads |",
           "|---|---|---|---|---|---|"]
    for kind in KINDS:
        right = [x for x in rows if x["kind"] == kind and not x["wrong"]]
        wrong = [x for x in rows if x["kind"] == kind and x["wrong"]]
        out.append(
            f"| {kind} ({len(right) // r['draws']} + {len(wrong) // r['draws']}"
            f" cases) | {len(right)} | {sum(x['verdict'] == 'FAIL' for x in right)} / "
            f"{sum(x['jax_check_grads'] is False for x in right)} | "
            f"{sum(x['verdict'] == 'UNDECIDED' for x in right + wrong)} | {len(wrong)} | "
            f"{sum(x['verdict'] == 'FAIL' for x in wrong)} / "
            f"{sum(x['jax_check_grads'] is False for x in wrong)} |")
    second = [x for x in rows if x["kind"] == "second order"]
    cost = (f"Cost on this corpus (median per check, compiled once before): order=2 "
            f"{np.median([x['seconds_unbatched'] for x in second]):.2f} s against "
            f"{np.median([x['seconds_order_1'] for x in second]):.2f} s at order 1; the "
            f"vmap/jit row (its jit compiled each time) "
            f"{np.median([x['seconds'] - x['seconds_unbatched'] for x in rows]):.2f} s of "
            f"{np.median([x['seconds'] for x in rows]):.2f} s.")
    missed = sorted({x["name"] for x in rows if x["wrong"] and x["verdict"] != "FAIL"})
    alarms = sorted({x["name"] for x in rows if not x["wrong"] and x["verdict"] == "FAIL"})
    return "\n".join(out + ["", cost]
                     + ([f"Not caught: {'; '.join(missed)}."] if missed else [])
                     + ([f"False alarms: {'; '.join(alarms)}."] if alarms else []))


if __name__ == "__main__":
    main()
