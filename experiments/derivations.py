"""Right and subtly wrong derivations, as a user would write them: the detection suite.

Each :class:`Derivation` pairs a real mistake people make with its correct
counterpart, both as a user's own ``Activation`` or ``Loss`` in an ``MLPSpec``.
``tests/test_gradcheck_detection.py`` asserts that :func:`mlp_jax.check_grads`
fails every wrong one and passes every right one, on several random draws;
``experiments/gradcheck_anchors.py`` runs the same pairs through
``jax.test_util.check_grads`` and ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import mlp_jax as mj
from mlp_jax.gradmatrix import kink_problem

SQRT2, SQRT_2PI = math.sqrt(2.0), math.sqrt(2.0 * math.pi)
GELU_C, GELU_K = math.sqrt(2.0 / math.pi), 0.044715
SLOPE, ALPHA, T = 0.1, 0.5, 2.0  # leaky slope, ELU alpha, softmax temperature


@dataclass(frozen=True)
class Derivation:
    """A mistake and its fix. ``on_kinks``: the mistake shows only at a kink, so it is
    exercised only by problems with a row placed exactly there (all of ours are)."""

    name: str
    right: mj.Activation | mj.Loss
    wrong: mj.Activation | mj.Loss
    on_kinks: bool = False

    def spec(self, wrong: bool) -> mj.MLPSpec:
        fn = self.wrong if wrong else self.right
        if isinstance(fn, mj.Activation):
            return mj.MLPSpec((5, 6, 5, 3), activation=fn, loss="softmax", reg=0.01,
                              dtype="float64")
        C = 1 if fn.labels in ("binary01", "binary_pm1") else 3
        return mj.MLPSpec((5, 6, C), activation="tanh", loss=fn, reg=0.01, dtype="float64")


def problem(d: Derivation, wrong: bool, seed: int, n: int = 8):
    """``(spec, params, x, y)``: random, with row 0 exactly on every kink."""
    spec = d.spec(wrong)
    with jax.enable_x64(True):
        params, x, y = kink_problem(spec, seed=seed, n=n)
    return spec, params, x, y


def activation(name, fn, deriv, kinks=()):
    return mj.Activation(name, fn, deriv, kinks)


# --- The activations' right derivatives, written out (not the library's). ----
def _phi(z):
    return jnp.exp(-0.5 * z * z) / SQRT_2PI


def _Phi(z):
    return 0.5 * (1.0 + jax.lax.erf(z / SQRT2))


def _gelu_tanh_deriv(z, three):
    t = jnp.tanh(GELU_C * (z + GELU_K * z**3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * GELU_C * (1 + three * GELU_K * z * z)


def _leaky(z):
    return jnp.where(z > 0, z, SLOPE * z)


def _exp_neg(z):
    # exp of the non-positive part only, so the unused branch never overflows; where, not
    # jnp.minimum, whose autodiff derivative at the tie z = 0 is 0.5
    return jnp.exp(jnp.where(z > 0, 0.0, z))


def _elu(z):
    return jnp.where(z > 0, z, ALPHA * (_exp_neg(z) - 1.0))


def _gelu_tanh(z):
    return 0.5 * z * (1.0 + jnp.tanh(GELU_C * (z + GELU_K * z**3)))


def _silu(z):
    return z * jax.nn.sigmoid(z)


def _sigmoid_deriv(z, a):
    return a * (1.0 - a)


def _f32(f):
    """The same derivative, computed in float32: a silent precision bug."""
    return lambda z, a: f(z.astype(jnp.float32), a.astype(jnp.float32)).astype(z.dtype)


# --- Losses: tempered softmax, SVM, squared, hinge, each as a user's Loss. ---
def _one_hot(y, C, dtype):
    return (y[:, None] == jnp.arange(C)[None, :]).astype(dtype)


def _tempered_value(s, y):
    z = s / T
    return jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0]


def _tempered_grad(s, y, divide=True):
    g = jax.nn.softmax(s / T, axis=1) - _one_hot(y, s.shape[1], s.dtype)
    return g / T if divide else g


def _svm_margins(s, y):
    m = s - jnp.take_along_axis(s, y[:, None], 1) + 1.0
    return jnp.where(_one_hot(y, s.shape[1], bool), 0.0, m)


def _svm_value(s, y):
    m = _svm_margins(s, y)
    return jnp.sum(jnp.where(m > 0, m, 0.0), axis=1)


def _svm_grad(s, y, count=True):
    active = (_svm_margins(s, y) > 0).astype(s.dtype)
    correct = active.sum(1, keepdims=True) if count else 1.0
    return active - _one_hot(y, s.shape[1], s.dtype) * correct


def _hinge_value(s, y):
    m = 1.0 - y * s[:, 0]
    return jnp.where(m > 0, m, 0.0)


def _hinge_grad(s, y, at_margin=0.0):
    m = 1.0 - y * s[:, 0]
    return jnp.where(m > 0, -y, jnp.where(m == 0, at_margin * -y, 0.0)).astype(s.dtype)[:, None]


def _loss(name, value, grad, labels, kink_state=None):
    return mj.Loss(name, value, grad, labels, kink_state)


def _svm_kinks(s, y):
    return _svm_margins(s, y) > 0


def _hinge_kinks(s, y):
    return 1.0 - y * s[:, 0] > 0


DERIVATIONS = (
    Derivation("sigmoid' off by a factor 1 + 1e-4",
               activation("sigmoid", jax.nn.sigmoid, _sigmoid_deriv),
               activation("sigmoid", jax.nn.sigmoid, lambda z, a: a * (1 - a) * (1 + 1e-4))),
    Derivation("tanh': 1 - a instead of 1 - a^2",
               activation("tanh", jnp.tanh, lambda z, a: 1 - a * a),
               activation("tanh", jnp.tanh, lambda z, a: 1 - a)),
    Derivation("GELU': missing the z phi(z) term",
               activation("gelu", lambda z: z * _Phi(z), lambda z, a: _Phi(z) + z * _phi(z)),
               activation("gelu", lambda z: z * _Phi(z), lambda z, a: _Phi(z))),
    Derivation("ELU': alpha forgotten (alpha 0.5)",
               activation("elu", _elu, lambda z, a: jnp.where(z > 0, 1.0, ALPHA * _exp_neg(z)),
                          (0.0,)),
               activation("elu", _elu, lambda z, a: jnp.where(z > 0, 1.0, _exp_neg(z)), (0.0,))),
    Derivation("tanh-GELU': the 3 of d/dz z^3 missing",
               activation("gelu_tanh", _gelu_tanh, lambda z, a: _gelu_tanh_deriv(z, 3.0)),
               activation("gelu_tanh", _gelu_tanh, lambda z, a: _gelu_tanh_deriv(z, 1.0))),
    Derivation("SiLU': a used where sigmoid(z) belongs",
               activation("silu", _silu, lambda z, a: (s := jax.nn.sigmoid(z)) + z * s * (1 - s)),
               activation("silu", _silu, lambda z, a: a + z * a * (1 - a))),
    Derivation("sigmoid' computed in float32",
               activation("sigmoid", jax.nn.sigmoid, _sigmoid_deriv),
               activation("sigmoid", jax.nn.sigmoid, _f32(_sigmoid_deriv))),
    Derivation("leaky ReLU' wrong only at 0 (1, not the slope)",
               activation("leaky_relu", _leaky, lambda z, a: jnp.where(z > 0, 1.0, SLOPE),
                          (0.0,)),
               activation("leaky_relu", _leaky, lambda z, a: jnp.where(z >= 0, 1.0, SLOPE),
                          (0.0,)), on_kinks=True),
    Derivation("squared loss: the 2 missing",
               _loss("squared", lambda s, y: jnp.sum((s - y) ** 2, 1), lambda s, y: 2 * (s - y),
                     "real"),
               _loss("squared", lambda s, y: jnp.sum((s - y) ** 2, 1), lambda s, y: s - y,
                     "real")),
    Derivation("tempered softmax (T = 2): 1/T missing",
               _loss("softmax_T", _tempered_value, _tempered_grad, "class"),
               _loss("softmax_T", _tempered_value,
                     lambda s, y: _tempered_grad(s, y, divide=False), "class")),
    Derivation("SVM: correct class gets -1, not -(number of active margins)",
               _loss("svm", _svm_value, _svm_grad, "class", _svm_kinks),
               _loss("svm", _svm_value, lambda s, y: _svm_grad(s, y, count=False), "class",
                     _svm_kinks)),
    Derivation("hinge: gradient wrong only on the margin (-y, not 0)",
               _loss("hinge", _hinge_value, _hinge_grad, "binary_pm1", _hinge_kinks),
               _loss("hinge", _hinge_value, lambda s, y: _hinge_grad(s, y, at_margin=1.0),
                     "binary_pm1", _hinge_kinks), on_kinks=True),
)


def scaled_tanh(eps: float) -> Derivation:
    """tanh' off by a factor (1 + eps): how small an error can each checker see?"""
    return Derivation(f"tanh' off by 1 + {eps:g}",
                      activation("tanh", jnp.tanh, lambda z, a: 1 - a * a),
                      activation("tanh", jnp.tanh, lambda z, a: (1 - a * a) * (1 + eps)))


def draws(count: int, start: int = 0) -> list[int]:
    """The seeds of the random draws used everywhere: fixed, so every run sees the same."""
    return list(np.arange(start, start + count) * 7919 + 11)
