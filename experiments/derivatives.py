"""check_derivative on a corpus of hand-written derivatives, against the anchors.

    python -m experiments.derivatives            # full: >= 2,000 draws of the correct
                                                 # corpus, 3 of each wrong one (~45 min)
    python -m experiments.derivatives --quick    # 2 draws, a few cases (the test suite)

The corpus (experiments/derivative_corpus.py): correct derivatives of many kinds, and
wrong ones with the mistakes people make, each at float64, float32, float16 and
bfloat16 where meaningful. Every checker sees the same rule: the case's custom_vjp /
custom_jvp, or its hand vjp= / jvp= attached to f as one. ``jax.test_util.check_grads``
runs as its users run it (``order=1, modes=("rev",)``, its per-dtype defaults);
``torch.autograd.gradcheck`` (where torch is installed) checks the same JAX function and
rule, bridged into a ``torch.autograd.Function`` at the case's dtype, with its defaults.

A wrong derivative is *exercised* by a draw at a dtype when it is wrong there by more
than 10 eps of that dtype: its largest error, measured by check_derivative in float64 on
the same inputs, relative to the largest entry of its block. Also measured: the smallest
multiplicative error (the rule times 1 + delta) each dtype catches on every draw, and the
time and peak memory of a 10^6-input check in a child process.
Writes experiments/results/derivatives.json and the README's table.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import quick_mode, run_python, write_json, write_readme_block  # noqa: E402
from experiments.derivative_corpus import CORRECT, WRONG  # noqa: E402
from mlp_jax.workers import run_cells  # noqa: E402

QUICK = quick_mode()
DRAWS_CORRECT = 2 if QUICK else 17
DRAWS_WRONG = 1 if QUICK else 3
CASES_CORRECT = CORRECT[::8] if QUICK else CORRECT
CASES_WRONG = WRONG[::8] if QUICK else WRONG
SCALED = ["softplus", "softmax", "layer norm (hand VJP, gamma, beta)", "tanh RNN by lax.scan",
          "linear solve"]  # the multiplicative-error sweep
DELTAS = [10.0 ** (-k / 4) for k in range(4, 61)]  # 0.1 .. 1e-15 (4.5 float64 eps), quarter decades
SCALED_DRAWS = 3
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def attached(f, args, options):
    """``(g, diff_args)``: the rule under test as JAX sees it, a function of the
    differentiable arguments only (what the anchors can take)."""
    static = options.get("static_argnums", ())
    diff = [a for i, a in enumerate(args) if i not in static]

    def call(fn):
        def g(*d):
            it = iter(d)
            return fn(*[a if i in static else next(it) for i, a in enumerate(args)])
        return g
    if "vjp" in options:
        g = jax.custom_vjp(call(f))
        g.defvjp(lambda *d: (call(f)(*d), d),
                 lambda d, ct: tuple(options["vjp"](*d, ct)) if len(d) > 1
                 else (options["vjp"](*d, ct),))
        return g, diff
    if "jvp" in options:
        g = jax.custom_jvp(call(f))
        g.defjvp(lambda p, t: options["jvp"](p, t))
        return g, diff
    return call(f), diff


def jax_anchor(f, args, options) -> bool | None:
    with jax.enable_x64(True):  # float64 stays float64
        return _jax_anchor(f, args, options)


def _jax_anchor(f, args, options) -> bool | None:
    g, diff = attached(f, args, options)
    try:
        jax.test_util.check_grads(g, tuple(diff), order=1, modes=("rev",))
        return True
    except AssertionError:
        return False
    except Exception:  # noqa: BLE001 (it cannot run this case at all)
        return None


def torch_anchor(f, args, options) -> bool | None:
    """torch.autograd.gradcheck of the same JAX function and rule, at the case's dtype."""
    with jax.enable_x64(True):
        return _torch_anchor(f, args, options)


def _torch_anchor(f, args, options) -> bool | None:
    import torch

    g, diff = attached(f, args, options)
    flat, unravel = jax.flatten_util.ravel_pytree(tuple(diff))
    out_flat, unravel_out = jax.flatten_util.ravel_pytree(g(*diff))
    dtype = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
             "bfloat16": torch.bfloat16}[jnp.dtype(flat.dtype).name]

    def to_jax(t):
        return jnp.asarray(t.detach().to(torch.float64).numpy(), flat.dtype)

    def to_torch(a):
        return torch.tensor(np.asarray(a, np.float64), dtype=dtype)

    def flat_g(v):
        return jax.flatten_util.ravel_pytree(g(*unravel(v)))[0]
    forward = jax.jit(flat_g)  # compiled once: torch calls these once per entry
    backward = jax.jit(lambda v, ct: jax.vjp(flat_g, v)[1](ct)[0])

    class Bridge(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return to_torch(forward(to_jax(x)))

        @staticmethod
        def backward(ctx, ct):
            (x,) = ctx.saved_tensors
            return to_torch(backward(to_jax(x), jnp.asarray(ct.to(torch.float64).numpy(),
                                                             out_flat.dtype)))
    x = to_torch(flat).requires_grad_(True)
    try:
        return bool(torch.autograd.gradcheck(Bridge.apply, (x,), raise_exception=False))
    except Exception:  # noqa: BLE001
        return None


def draw(case, dtype, seed):
    with jax.enable_x64(True):
        return case.make(np.random.default_rng(seed), dtype)


_LAST = []  # the case and dtype this worker checked last


def _fresh_caches_per_case(key) -> None:
    """Each case compiles its own programs, which draws of the same case and dtype reuse:
    drop them when the case changes, so a worker's memory stays flat."""
    if _LAST and _LAST[-1] != key:
        jax.clear_caches()
    _LAST[:] = [key]


def check_item(item) -> dict:
    group, index, dtype, seed = item
    _fresh_caches_per_case((group, index, dtype))
    case = (CORRECT if group == "correct" else WRONG)[index]
    f, args, options = draw(case, dtype, seed)
    t0 = time.perf_counter()
    report = mj.check_derivative(f, *args, **options, seed=seed)
    out = dict(group=group, case=case.name, kind=case.kind, dtype=dtype, seed=seed,
               passed=report.passed, used=report.used, kinks=report.kinks,
               seconds=time.perf_counter() - t0,
               jax=jax_anchor(f, args, options),
               torch=torch_anchor(f, args, options) if HAVE_TORCH else None)
    if group == "wrong":  # how wrong at float64, on the very same inputs
        with jax.enable_x64(True):
            up = tuple(a if i in options.get("static_argnums", ()) else jax.tree.map(
                lambda v: jnp.asarray(v, jnp.float64), a) for i, a in enumerate(args))
        out["error"] = mj.check_derivative(f, *up, **options, seed=seed).error
        out["exercised"] = out["error"] > 10 * float(jnp.finfo(dtype).eps)
    return out


def _caught(case, dtype, delta) -> bool:
    """Does check_derivative fail (1 + delta) times the case's correct rule on every draw?"""
    for seed in range(SCALED_DRAWS):
        f, args, options = draw(case, dtype, seed)
        g, diff = attached(f, args, options)

        def vjp(*a, g=g):
            *d, ct = a
            _, pullback = jax.vjp(g, *d)
            back = jax.tree.map(lambda v: v * (1 + delta), pullback(ct))
            return back if len(d) > 1 else back[0]
        if mj.check_derivative(g, *diff, vjp=vjp, reference=g, seed=seed).passed:
            return False
    return True


def scaled_item(item) -> dict:
    """The smallest delta of DELTAS for which (1 + delta) times a correct rule fails every
    draw: a bisection (a larger error is caught wherever a smaller one is)."""
    name, dtype = item
    case = next(c for c in CORRECT if c.name == name)
    lo, hi = -1, len(DELTAS)  # DELTAS[lo] caught (lo = -1: none tried), DELTAS[hi] not
    if not _caught(case, dtype, DELTAS[0]):
        hi = 0
    else:
        lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        jax.clear_caches()
        lo, hi = (mid, hi) if _caught(case, dtype, DELTAS[mid]) else (lo, mid)
    smallest = DELTAS[lo] if lo >= 0 else None
    return dict(case=name, dtype=dtype, smallest=smallest,
                in_eps=None if smallest is None else smallest / float(jnp.finfo(dtype).eps))


BIG_CHILD = """
import time, jax, jax.numpy as jnp, numpy as np, mlp_jax as mj
from experiments.derivative_corpus import _layernorm, _layernorm_vjp
def hwm():
    return int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(ROWS, 1000)), jnp.float32)
gamma, beta = jnp.ones(1000, jnp.float32), jnp.zeros(1000, jnp.float32)
base = hwm()
t = time.perf_counter()
r = mj.check_derivative(_layernorm, x, gamma, beta, vjp=_layernorm_vjp)
print(time.perf_counter() - t, r.passed, base, hwm(), r.mode)
"""


def big_check(rows: int = 1000) -> dict:
    """Layer norm's hand VJP on ``rows`` x 1000 float32 inputs (10^6 for 1000 rows), in a
    child process: time and peak memory."""
    proc = run_python(["-c", BIG_CHILD.replace("ROWS", str(rows))], capture_output=True,
                      text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    seconds, passed, base, peak, *mode = proc.stdout.split()
    return dict(inputs=rows * 1000 + 2000, seconds=float(seconds), passed=passed == "True",
                mode=" ".join(mode), peak_bytes=int(peak), baseline_bytes=int(base))


def summarize(rows: list[dict]) -> dict:
    table = {}
    for r in rows:
        t = table.setdefault(r["group"], {}).setdefault(r["dtype"], dict(
            n=0, ours=0, jax=0, jax_ran=0, torch=0, torch_ran=0, exercised=0))
        exercised = r["group"] == "correct" or r["exercised"]
        if not exercised:
            continue
        t["n"] += 1  # flagged = failed: a false alarm (correct) or a catch (wrong)
        t["ours"] += not r["passed"]
        for anchor in ("jax", "torch"):
            if r[anchor] is not None:
                t[anchor + "_ran"] += 1
                t[anchor] += not r[anchor]
    return table


def section(res: dict) -> str:
    t = res["table"]
    dtypes = ["float64", "float32", "float16", "bfloat16"]
    n_ok = sum(t["correct"][d]["n"] for d in dtypes if d in t["correct"])
    fa = sum(t["correct"][d]["ours"] for d in dtypes if d in t["correct"])
    lines = [
        f"{res['cases_correct']} correct and {res['cases_wrong']} wrong hand-written "
        f"derivatives; correct: {res['draws_correct']} random draws each per dtype, wrong: "
        f"{res['draws_wrong']}. A cell is *flagged / draws*: for correct derivatives every "
        "flag is a false alarm; for wrong ones it is a detection, counted over the draws "
        "that exercise the mistake (wrong by more than 10 eps of the dtype).", "",
        "| corpus | dtype | draws | check_derivative | jax.test_util.check_grads | "
        "torch.autograd.gradcheck |", "|---|---|---|---|---|---|"]
    for group in ("correct", "wrong"):
        for d in dtypes:
            c = t[group].get(d)
            if not c:
                continue
            anchors = [f"{c[a]} / {c[a + '_ran']}" if c[a + "_ran"] else "not run"
                       for a in ("jax", "torch")]
            lines.append(f"| {group} ({'false alarms' if group == 'correct' else 'caught'})"
                         f" | {d} | {c['n']} | {c['ours']} / {c['n']} | {anchors[0]} | "
                         f"{anchors[1]} |")
    lines += ["", f"{n_ok} draws of correct derivatives, {fa} false alarms. Smallest "
              "multiplicative error (the rule times 1 + delta, delta in quarter decades "
              f"from 0.1 to {DELTAS[-1]:.0e}) caught on each of {SCALED_DRAWS} draws, in "
              "units of the dtype's eps (≤: caught at the smallest delta tried):", "",
              "| case | " + " | ".join(dtypes) + " |", "|---|" + "---|" * len(dtypes)]
    for name in SCALED:
        cells = []
        for d in dtypes:
            s = next((s for s in res["scaled"] if s["case"] == name and s["dtype"] == d),
                     None)
            cells.append("-" if s is None else "not caught" if s["in_eps"] is None
                         else f"≤ {s['in_eps']:.2g}" if s["smallest"] == DELTAS[-1]
                         else f"{s['in_eps']:.2g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if res.get("big"):
        b = res["big"]
        lines += ["", f"Any size: layer norm's hand VJP on a float32 (1000, 1000) input with "
                  f"gamma and beta ({b['inputs']:,} inputs) checks by {b['mode']} in "
                  f"{b['seconds']:.1f} s, peak memory {b['peak_bytes'] / 2**30:.2f} GiB "
                  f"(the process after importing jax: {b['baseline_bytes'] / 2**30:.2f} GiB); "
                  f"{'PASS' if b['passed'] else 'FAIL'}."]
    return "\n".join(lines)


def main():
    workers = 2
    items = [("correct", i, d, s) for i, c in enumerate(CORRECT) if c in CASES_CORRECT
             for d in c.dtypes for s in range(DRAWS_CORRECT)]
    items += [("wrong", i, d, s) for i, c in enumerate(WRONG) if c in CASES_WRONG
              for d in c.dtypes for s in range(DRAWS_WRONG)]
    t0 = time.perf_counter()

    def progress(done, total):
        if done % 50 == 0 or done == total:
            print(f"{done}/{total} checks, {time.perf_counter() - t0:.0f} s", flush=True)
    rows = run_cells(check_item, items, workers, progress)
    write_json("derivatives", dict(rows=rows), QUICK)  # kept, whatever happens next
    scaled = [] if QUICK else run_cells(
        scaled_item, [(n, d) for n in SCALED for d in next(
            c for c in CORRECT if c.name == n).dtypes], workers)
    res = dict(cases_correct=len(CASES_CORRECT), cases_wrong=len(CASES_WRONG),
               draws_correct=DRAWS_CORRECT, draws_wrong=DRAWS_WRONG, rows=rows,
               table=summarize(rows), scaled=scaled,
               big=None if QUICK else big_check())
    text = section(res)
    print(text)
    for r in rows:
        if (r["group"] == "correct" and not r["passed"]) or (
                r["group"] == "wrong" and r["exercised"] and r["passed"]):
            print("MISJUDGED:", r["group"], r["case"], r["dtype"], r["seed"], r["used"])
    write_json("derivatives", res, QUICK)
    if not QUICK:
        write_readme_block("derivatives", text)


if __name__ == "__main__":
    main()
