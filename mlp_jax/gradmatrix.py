"""Many gradient checks at once: the fixed matrix and random sweeps of correct code.

Both answer "does :func:`mlp_jax.check_grads` pass every built-in layer, and
never cry wolf?". The *matrix* is every activation x loss x depth 1-4 x reg x
dropout on fixed problems, plus every norm with every activation x loss x depth 2-4;
a *random sweep* draws configurations (activation, loss, depth 1-6, widths, batch
1-64, reg, dropout, input noise, maxout pieces, bias, norm, kink-placed rows or not)
and several problems for each, and counts the checks that fail: on correct code each
one is a false alarm.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

from . import layers
from .activations import ACTIVATION_NAMES
from .gradcheck import check_grads
from .losses import BINARY01, BINARY_PM1, LOSS_NAMES, get_loss
from .network import init_params
from .spec import NORMS, MLPSpec
from .workers import run_cells


def kink_problem(spec: MLPSpec, seed: int, n: int = 16, on_kinks: bool = True):
    """Params and a batch of ``n`` rows; with ``on_kinks``, row 0 sits exactly on every kink.

    Row 0 of ``x`` is zero and hidden biases are zero, so every pre-activation
    of row 0 is exactly 0 (the ReLU family's kink; all maxout pieces tie; with a norm,
    ``beta`` does it instead: :func:`_norm_on_kinks`), and
    the output bias puts row 0 exactly on a hinge margin (svm: ``s_0 - s_1 + 1
    = 0``; hinge: ``1 - y s = 0``). The other rows are random. Without
    ``on_kinks`` every bias is random and no row is placed.
    """
    rng = np.random.default_rng(seed)
    D, C = spec.sizes[0], spec.sizes[-1]
    params = list(init_params(jax.random.key(seed), spec))
    x = rng.normal(size=(n, D))
    labels = spec.loss_fn.labels
    if on_kinks:
        x[0] = 0.0
        b_out = rng.normal(size=(C,))
        if spec.loss_fn.name == "svm" and C > 1:
            b_out[:2] = (0.0, 1.0)
        elif spec.loss_fn.name == "hinge":
            b_out[0] = 1.0
        if spec.bias:
            params[-1] = dict(params[-1], b=jnp.asarray(b_out, params[-1]["b"].dtype))
    elif spec.bias:
        params = [dict(p, b=jnp.asarray(0.3 * rng.normal(size=p["b"].shape), p["b"].dtype))
                  if "b" in p else p for p in params]  # batch norm's hidden layers have none
    if on_kinks and spec.norm is not None:
        params = _norm_on_kinks(params, spec, rng, x)
    first = [1] if on_kinks else []
    y = {
        "class": lambda: np.concatenate([first, rng.integers(0, C, n - len(first))]),
        "binary01": lambda: rng.integers(0, 2, n),
        "binary_pm1": lambda: np.concatenate([first, 2 * rng.integers(0, 2, n - len(first)) - 1]),
        "real": lambda: rng.normal(size=(n, C)),
    }[labels]()
    return tuple(params), x, y.astype(int) if labels != "real" else y


def _norm_on_kinks(params, spec: MLPSpec, rng, x):
    """With a norm, row 0's activation inputs are put at 0 by ``beta`` instead: row 0 of
    ``x`` and the hidden biases are random, and each hidden layer's ``beta`` is minus
    ``gamma`` times row 0's normalized value, so that ``gamma x̂ + beta`` is exactly 0
    (a + (-a)) when the network is run op by op (as the matrix runs it, and random sweeps
    run such problems); a compiled program may sum in another order, leaving row 0
    within rounding of 0, on either side of a kink: measured, hand backprop and
    ``jax.grad`` compiled together then took opposite branches of a ReLU. A row of
    zeros would also sit at 0, but its variance is 0, where the normalization's
    curvature (1/sqrt(eps)) leaves finite differences nothing to measure."""
    x[0] = rng.normal(size=x.shape[1])
    h = jnp.asarray(x)  # the whole batch, op by op as the network does it: the same sums
    act = spec.elementwise_activation
    params = list(params)
    for layer, p in enumerate(params[:-1]):
        p = dict(p)
        if "b" in p:
            p["b"] = jnp.asarray(rng.normal(size=p["b"].shape), p["b"].dtype)
        u = layers.affine(h, p["W"], p.get("b"))
        _, (xhat, _) = layers.normalize(u, p["gamma"], jnp.zeros_like(p["beta"]),
                                        spec.norm_eps, axis=0 if spec.batchnorm else 1)
        p["beta"] = -p["gamma"] * xhat[0]
        params[layer] = p
        h = act.fn(p["gamma"] * xhat + p["beta"])  # exactly 0 before the activation
    return params


def _outputs(loss_name: str, classes: int) -> int:
    return 1 if get_loss(loss_name).labels in (BINARY01, BINARY_PM1) else classes


def _summary(report) -> dict:
    """What a sweep keeps of one report."""
    return dict(
        passed=report.passed, used=report.used, autodiff=report.worst_autodiff,
        fd=report.worst_fd, kink_entries=report.kink_entries,
        absolute_used_autodiff=max(leaf.autodiff.absolute_used for leaf in report.leaves),
        absolute_used_fd=max(leaf.fd.absolute_used for leaf in report.leaves))


# --- The fixed matrix: every activation x loss x depth x reg x dropout, and the ----
# norms (batch norm in training mode, layer norm): every activation (maxout takes none)
# x loss x depth 2-4 at reg 0.1, dropout 0.3.
MATRIX_DEPTHS = (1, 2, 3, 4)
MATRIX_REGS = (0.0, 0.1)
MATRIX_DROPOUTS = (0.0, 0.3)
MATRIX_NORMS = ("layernorm", "batchnorm")
# One width for every layer, so cells share shapes and reuse each other's compiled ops.
_MATRIX_D, _MATRIX_H, _MATRIX_N, _MATRIX_C = 5, 5, 16, 3


def matrix_cells():
    """Every cell of the matrix as ``(activation, loss, depth, reg, dropout, norm)``."""
    plain = [(act, name, depth, reg, p, None) for act in ACTIVATION_NAMES for name in LOSS_NAMES
             for depth in MATRIX_DEPTHS for reg in MATRIX_REGS for p in MATRIX_DROPOUTS]
    normed = [(act, name, depth, MATRIX_REGS[-1], MATRIX_DROPOUTS[-1], norm)
              for norm in MATRIX_NORMS for act in ACTIVATION_NAMES if act != "maxout"
              for name in LOSS_NAMES for depth in MATRIX_DEPTHS if depth > 1]
    return plain + normed


def matrix_spec(act: str, loss_name: str, depth: int, reg: float, dropout: float,
                norm: str | None = None) -> MLPSpec:
    sizes = (_MATRIX_D, *[_MATRIX_H] * (depth - 1), _outputs(loss_name, _MATRIX_C))
    return MLPSpec(sizes, activation=act, loss=loss_name, reg=reg, dropout=dropout,
                   norm=norm, dtype="float64")


def _canonical(cell):
    """The cell actually computed: a depth-1 net (the linear classifier) has no
    hidden layer, so neither its activation nor dropout changes anything."""
    act, name, depth, reg, p, norm = cell
    return ("relu", name, depth, reg, 0.0, None) if depth == 1 else cell


def cell_seed(cell) -> int:
    """A cell's problem seed, from its coordinates: every run checks the same problems,
    and adding cells changes no other cell's."""
    return zlib.crc32(repr(cell).encode()) & 0x7FFFFFFF  # a non-negative int32


def _check_matrix_cell(cell) -> dict:
    seed = cell_seed(cell)
    spec = matrix_spec(*cell)
    with jax.enable_x64(True):
        params, x, y = kink_problem(spec, seed=seed, n=_MATRIX_N)
    report = check_grads(params, x, y, spec, key=jax.random.key(seed) if cell[4] else None,
                         jit=False)
    return _summary(report)


def check_matrix(workers: int = 1, progress=None) -> list[dict]:
    """Run :func:`check_grads` on every cell of the matrix.

    Args:
      workers: processes to spread the cells over (each compiles its own ops).
      progress: called with ``(done, total)`` as cells finish.

    Returns:
      One dict per cell of :func:`matrix_cells`: its coordinates, ``passed``,
      ``used`` (the worst entry's share of its allowance), the worst CS231n
      relative errors vs ``jax.grad`` and vs finite differences, the kink
      entries, and the largest share of the absolute terms any entry needed
      beyond ``rtol`` (``absolute_used_autodiff`` / ``_fd``).
    """
    cells = matrix_cells()
    unique = list(dict.fromkeys(_canonical(c) for c in cells))
    done = dict(zip(unique, run_cells(_check_matrix_cell, unique, workers, progress)))
    keys = ("activation", "loss", "depth", "reg", "dropout", "norm")
    return [dict(zip(keys, c), **done[_canonical(c)]) for c in cells]


# --- Random sweeps: configurations drawn at random, several problems each. ----
@dataclass(frozen=True)
class RandomConfig:
    """One random configuration; ``draws`` problems are checked under one compile."""

    index: int
    activation: str
    loss: str
    sizes: tuple[int, ...]
    n: int
    reg: float
    dropout: float
    input_noise: float
    maxout_k: int
    bias: bool
    leaky_slope: float
    elu_alpha: float
    seed: int
    draws: int
    norm: str | None = None

    def spec(self) -> MLPSpec:
        return MLPSpec(self.sizes, activation=self.activation, loss=self.loss, reg=self.reg,
                       dropout=self.dropout, input_noise=self.input_noise,
                       maxout_k=self.maxout_k, bias=self.bias,
                       leaky_slope=self.leaky_slope, elu_alpha=self.elu_alpha, norm=self.norm,
                       dtype="float64")


def random_configs(cells: int, seed: int = 0, draws: int = 4,
                   max_depth: int = 6) -> list[RandomConfig]:
    """``ceil(cells / draws)`` random configurations covering ``cells`` problems in all."""
    rng, norm_rng = np.random.default_rng(seed), np.random.default_rng((seed, 1))
    configs = []
    for i in range(-(-cells // draws)):
        act = str(rng.choice(ACTIVATION_NAMES))
        loss_name = str(rng.choice(LOSS_NAMES))
        depth = int(rng.integers(1, max_depth + 1))
        hidden = [int(w) for w in rng.integers(3, 41, depth - 1)]
        sizes = (int(rng.integers(2, 31)), *hidden, _outputs(loss_name, int(rng.integers(2, 11))))
        configs.append(RandomConfig(
            index=i, activation=act, loss=loss_name, sizes=sizes,
            n=int(round(2 ** rng.uniform(0, 6))),  # 1..64, log-uniform
            reg=float(rng.choice([0.0, 1e-3, 0.1])),
            dropout=float(rng.choice([0.0, 0.3])) if depth > 1 else 0.0,
            input_noise=float(rng.choice([0.0, 0.0, 0.1])),
            maxout_k=int(rng.integers(2, 4)), bias=bool(rng.random() < 0.9),
            leaky_slope=float(rng.choice([0.01, 0.2])), elu_alpha=float(rng.choice([1.0, 0.6])),
            seed=int(rng.integers(2**31)),
            draws=min(draws, cells - i * draws),
            # drawn from their own stream, so that adding norms left every other draw of
            # a seed as it was; a norm on a net without biases would put the kink row at
            # variance 0 (see _norm_on_kinks): the sweep gives its norms biases
            norm=str(norm_rng.choice(NORMS)) if depth > 1 and act != "maxout"
            and norm_rng.random() < 0.5 else None))
        if configs[-1].norm is not None and not configs[-1].bias:
            configs[-1] = dataclasses.replace(configs[-1], bias=True)
        if configs[-1].norm == "batchnorm" and configs[-1].n < 3:  # check_grads refuses them
            configs[-1] = dataclasses.replace(configs[-1], n=3)
    return configs


def check_random_config(config: RandomConfig) -> list[dict]:
    """Check each of ``config.draws`` problems; half are placed on the kinks."""
    spec = config.spec()
    results = []
    for d in range(config.draws):
        seed = config.seed + d
        on_kinks = d % 2 == 0
        with jax.enable_x64(True):
            params, x, y = kink_problem(spec, seed=seed, n=config.n, on_kinks=on_kinks)
        key = jax.random.key(seed) if config.dropout or config.input_noise else None
        # a norm's kink row is exactly on the kinks only op by op (_norm_on_kinks): compiled,
        # the hand and jax.grad programs may round it to opposite sides of a kink
        report = check_grads(params, x, y, spec, key=key,
                             jit=not (on_kinks and spec.norm is not None))
        results.append(dict(asdict(config), depth=spec.num_layers, draw=d, on_kinks=on_kinks,
                            **_summary(report)))
    # No later configuration reuses this one's programs, and hundreds of compiled programs
    # kept alive exhaust the process's memory mappings (LLVM: "Cannot allocate memory").
    jax.clear_caches()
    return results


def random_sweep(cells: int, seed: int = 0, draws: int = 4, workers: int = 1,
                 progress=None) -> list[dict]:
    """Check ``cells`` random problems of correct code; each failure is a false alarm.

    Every configuration compiles its own programs, so jax's caches are cleared after
    each (``jax.clear_caches``): with ``workers=1`` that happens in the calling process.

    Returns:
      One dict per problem: its configuration, ``draw``, ``on_kinks`` and the
      fields of :func:`check_matrix`'s dicts.
    """
    configs = random_configs(cells, seed=seed, draws=draws)
    per_config = run_cells(check_random_config, configs, workers, progress)
    return [r for rs in per_config for r in rs]
