"""Our check_grads side by side with jax.test_util.check_grads and torch.autograd.gradcheck.

    python -m experiments.gradcheck_anchors           # full (about 15 min; torch optional)
    python -m experiments.gradcheck_anchors --quick   # 4 derivations, 1 draw, no big net
    python -m experiments.gradcheck_anchors --big-only  # only re-time the big-net rows

Every checker sees the same thing: the loss as a function of a flat float64 parameter
vector, whose backward pass is the hand-derived one (mlp_jax.backprop with the user's
Activation or Loss), wrapped as a jax.custom_vjp for JAX and a torch.autograd.Function
for PyTorch. Each checker then compares that backward pass with its own reference:
jax.test_util.check_grads with finite differences along one random direction,
torch.autograd.gradcheck with finite differences of every entry, ours with jax.grad of the
forward and finite differences (see mlp_jax/gradcheck.py). The derivations are those of
experiments/derivations.py (right and wrong), each on several random draws with one row
placed exactly on the kinks. Also measured: the smallest multiplicative error in a
derivative each checker sees, and the time (and, for ours, peak memory, in a child
process) of each checker's default check of a (784, 100, 10) net with a batch of 16.
Writes experiments/results/gradcheck_anchors.{json,png} and the README's table.
"""

import importlib.util
import json
import os
import resource
import sys
import time

import jax
import jax.test_util
import numpy as np
from jax.flatten_util import ravel_pytree

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import (  # noqa: E402
    COMMITTED,
    figure_path,
    quick_mode,
    run_python,
    write_json,
    write_readme_block,
)
from experiments.derivations import DERIVATIONS, draws, problem, scaled_tanh  # noqa: E402

QUICK = quick_mode()
DRAWS = draws(1 if QUICK else 3)
# quick: a smooth activation, a kinked one, a loss, one draw, two error sizes
CASES = DERIVATIONS[1::3] if QUICK else DERIVATIONS
EPSILONS = [1e-3, 1e-9] if QUICK else [10.0**-k for k in range(1, 13, 2)]
BIG = (784, 100, 10)  # MNIST-sized: 79,510 parameters
FULL = "check_grads (ours, full)"  # every entry finite-differenced
HAVE_TORCH = importlib.util.find_spec("torch") is not None  # imported where used, so a
# child measuring another checker's memory does not load it


def _torch():
    import torch

    torch.set_default_dtype(torch.float64)
    return torch


def hand_loss(spec, params, x, y):
    """``(flat, f, hand)``: the flat params, the loss of flat params with the hand VJP,
    and ``hand(flat) -> (value, flat grad)``; all float64 (call inside enable_x64)."""
    flat, unravel = ravel_pytree(jax.tree.map(lambda a: jax.numpy.asarray(a, "float64"),
                                              params))
    x = jax.numpy.asarray(x, "float64")

    @jax.jit
    def hand(theta):
        value, grads = mj.backprop(unravel(theta), x, y, spec)
        return value, ravel_pytree(grads)[0]

    @jax.custom_vjp
    def f(theta):
        return mj.loss(unravel(theta), x, y, spec)

    f.defvjp(hand, lambda g, ct: (ct * g,))
    return flat, f, hand


def ours(spec, params, x, y) -> bool:
    return mj.check_grads(params, x, y, spec).passed


def jax_anchor(spec, params, x, y) -> bool:
    with jax.enable_x64(True):
        flat, f, _ = hand_loss(spec, params, x, y)
        try:
            jax.test_util.check_grads(f, (flat,), order=1, modes=["rev"])
            return True
        except AssertionError:
            return False


def torch_anchor(spec, params, x, y) -> bool:
    torch = _torch()
    with jax.enable_x64(True):
        flat, _, hand = hand_loss(spec, params, x, y)

        class HandLoss(torch.autograd.Function):
            @staticmethod
            def forward(ctx, theta):
                value, grad = hand(theta.detach().numpy())
                ctx.save_for_backward(torch.from_numpy(np.array(grad)))
                return torch.tensor(float(value))

            @staticmethod
            def backward(ctx, g):
                return g * ctx.saved_tensors[0]

        theta = torch.tensor(np.asarray(flat), requires_grad=True)
        return torch.autograd.gradcheck(HandLoss.apply, (theta,), raise_exception=False)


CHECKERS = {"check_grads (ours)": ours, "jax.test_util.check_grads": jax_anchor}
if HAVE_TORCH:
    CHECKERS["torch.autograd.gradcheck"] = torch_anchor


def verdicts(d, wrong: bool) -> dict:
    """How many draws each checker flagged."""
    flagged = dict.fromkeys(CHECKERS, 0)
    for seed in DRAWS:
        spec, params, x, y = problem(d, wrong, seed)
        for name, check in CHECKERS.items():
            flagged[name] += not check(spec, params, x, y)
    return flagged


def big_net(which: str) -> dict:
    """Run in a child process: one checker's default check of the BIG net, timed."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, BIG[0])), rng.integers(0, BIG[-1], 16)
    t0 = time.perf_counter()
    if which == "torch.autograd.gradcheck":  # PyTorch's own net and autograd: its usual use
        torch = _torch()
        W1 = torch.randn(BIG[1], BIG[0]) * (2 / BIG[0]) ** 0.5
        W2 = torch.randn(BIG[2], BIG[1]) * (2 / BIG[1]) ** 0.5
        ps = [p.requires_grad_() for p in (W1, torch.zeros(BIG[1]), W2, torch.zeros(BIG[2]))]
        xt, yt = torch.tensor(x), torch.tensor(y)

        def f(W1, b1, W2, b2):
            h = torch.relu(xt @ W1.T + b1)
            return torch.nn.functional.cross_entropy(h @ W2.T + b2, yt) + 1e-3 * (
                (W1**2).sum() + (W2**2).sum())

        passed = torch.autograd.gradcheck(f, ps, raise_exception=False)
    else:
        spec = mj.MLPSpec(BIG, activation="relu", loss="softmax", reg=1e-3)
        params = mj.init_params(jax.random.key(0), spec)
        fd_entries = None if which == FULL else "auto"
        passed = (mj.check_grads(params, x, y, spec, fd_entries=fd_entries).passed
                  if which.startswith("check_grads") else jax_anchor(spec, params, x, y))
    return dict(seconds=time.perf_counter() - t0, passed=bool(passed),
                peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def in_child(which: str) -> dict:
    proc = run_python(["-m", "experiments.gradcheck_anchors", "--big", which],
                      capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{which} on the big net failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(r: dict) -> str:
    names = list(r["checkers"])
    n = r["draws"]
    out = ["| derivation | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    fa = {c: sum(v[c] for v in r["right"].values()) for c in names}
    total = n * len(r["right"])
    out.append("| **false alarms on the right derivations** | "
               + " | ".join(f"**{fa[c]} / {total}**" for c in names) + " |")
    for d, v in r["wrong"].items():
        out.append(f"| {d} | " + " | ".join(f"{v[c]} / {n}" for c in names) + " |")
    out.append("| **smallest error factor 1 + ε caught on every draw** | "
               + " | ".join(f"**{r['smallest_caught'][c]:.0e}**" if r["smallest_caught"][c]
                            else "—" for c in names) + " |")
    if "big" in r:
        cells = []
        for c in names:
            b = r["big"].get(c)
            cells.append("—" if b is None else f"{b['seconds']:.1f} s, "
                         f"{'PASS' if b['passed'] else 'FAIL'}"
                         + (f", {b['peak_mb']:.0f} MB" if c.startswith("check_grads") else ""))
        out.append("| (784, 100, 10) net, N = 16: default check | " + " | ".join(cells) + " |")
        full = r["big"].get(FULL)
        if full:
            out += ["", f"With finite differences on all 79,510 entries (`fd_entries=None`), "
                    f"ours takes {full['seconds']:.0f} s and {full['peak_mb']:.0f} MB peak, "
                    f"{'PASS' if full['passed'] else 'FAIL'}."]
    return "\n".join(out)


def main():
    results = dict(checkers=list(CHECKERS), draws=len(DRAWS), right={}, wrong={})
    for d in CASES:
        results["right"][d.name] = verdicts(d, wrong=False)
        results["wrong"][d.name] = verdicts(d, wrong=True)
        print(f"{d.name:<62} right flagged {results['right'][d.name]}, "
              f"wrong flagged {results['wrong'][d.name]}", flush=True)
    caught = {}
    for eps in EPSILONS:
        caught[eps] = verdicts(scaled_tanh(eps), wrong=True)
        print(f"tanh' x (1 + {eps:.0e}): flagged {caught[eps]}", flush=True)
    results["epsilons"] = EPSILONS
    results["caught_by_eps"] = [caught[e] for e in EPSILONS]
    results["smallest_caught"] = {
        c: min((e for e in EPSILONS if all(caught[f][c] == len(DRAWS)
                                           for f in EPSILONS if f >= e)), default=None)
        for c in CHECKERS}
    if not QUICK:
        results["big"] = {}
        for which in [*CHECKERS, FULL]:
            results["big"][which] = in_child(which)
            print(f"(784, 100, 10): {which}: {results['big'][which]}", flush=True)
    write_json("gradcheck_anchors", results, QUICK)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for c in CHECKERS:
        ax.semilogx(EPSILONS, [v[c] / len(DRAWS) for v in results["caught_by_eps"]], "o-",
                    label=c)
    ax.set(xlabel="error factor 1 + ε in tanh'", ylabel="share of draws flagged",
           title="Smallest derivative error each checker sees")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(figure_path("gradcheck_anchors", QUICK), dpi=120)
    print(table(results))
    if not QUICK:
        write_readme_block("gradcheck-anchors", table(results)
                           + "\n\n![](experiments/results/gradcheck_anchors.png)")
        print("rewrote the README's gradcheck-anchors table")


def big_only():
    """Re-measure only the big-net rows, keeping the rest of results/gradcheck_anchors.json."""
    path = os.path.join(COMMITTED, "gradcheck_anchors.json")
    with open(path) as f:
        results = json.load(f)
    results["big"] = {which: in_child(which) for which in [*CHECKERS, FULL]}
    print(results["big"])
    write_json("gradcheck_anchors", results, False)
    write_readme_block("gradcheck-anchors", table(results)
                       + "\n\n![](experiments/results/gradcheck_anchors.png)")


if __name__ == "__main__":
    if "--big-only" in sys.argv:
        big_only()
    elif "--big" in sys.argv:
        print(json.dumps(big_net(sys.argv[sys.argv.index("--big") + 1])))
    else:
        main()
