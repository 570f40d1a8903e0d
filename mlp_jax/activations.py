"""Activation functions, each with its hand-derived derivative right beside it.

An :class:`Activation` is a pair of pure elementwise functions: ``fn(z) -> a``
and ``deriv(z, a) -> da/dz`` (``a = fn(z)`` is passed in so the derivative can
reuse it, as sigmoid and tanh do). ``kinks`` lists the points where the
derivative jumps; the gradient checker uses them to tell a finite-difference
stencil that straddles a kink from a wrong derivative.

Kink convention (ARCHITECTURE.md): every derivative here equals what ``jax.grad``
gives for the forward definition beside it, at every point, kinks included.
That is why the forward passes are written with ``jnp.where`` (autodiff takes the
branch selected at exactly 0: ``z > 0`` is false there, ``z <= 0`` true) and never
with ``jnp.maximum(0, z)`` (whose autodiff derivative at 0 is 0.5). A NaN input
gives a NaN output wherever the negative side would have hidden it.

Maxout is not elementwise (it takes the max over k affine pieces); its forward
and backward live here too, as :func:`maxout` and :func:`maxout_backward`.

References: CS231n "Neural Networks Part 1" (activation functions);
Hendrycks & Gimpel 2016 (GELU); Clevert et al. 2015 (ELU);
Goodfellow et al. 2013 (maxout).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclass(frozen=True)
class Activation:
    """An elementwise activation and its hand-derived derivative.

    Attributes:
      name: shown in reports and error messages.
      fn: ``z -> a``, elementwise, any shape.
      deriv: ``(z, a) -> da/dz``, elementwise, same shape as ``z``.
      kinks: points where ``deriv`` is discontinuous (e.g. ``(0.0,)`` for ReLU).

    To verify your own derivation, build one and put it in an ``MLPSpec``::

        softplus = Activation("softplus", jax.nn.softplus,
                              lambda z, a: jax.nn.sigmoid(z))
        spec = MLPSpec(sizes=(4, 8, 3), activation=softplus)
        print(check_grads(params, x, y, spec))
    """

    name: str
    fn: Callable[[Array], Array]
    deriv: Callable[[Array, Array], Array]
    kinks: tuple[float, ...] = ()


# --- ReLU: max(0, z); derivative 1 for z > 0, else 0 (0 at the kink). --------
def _relu(z):  # written z <= 0 so a NaN stays NaN (not 0, which hid NaN inputs)
    return jnp.where(z <= 0, 0.0, z)


def _relu_deriv(z, a):
    return jnp.where(z <= 0, 0.0, 1.0).astype(z.dtype)


# --- Leaky ReLU: z for z > 0, slope * z otherwise (slope at the kink). --------
def leaky_relu(slope: float) -> Activation:
    def fn(z):
        return jnp.where(z > 0, z, slope * z)

    def deriv(z, a):
        return jnp.where(z > 0, 1.0, slope).astype(z.dtype)

    return Activation("leaky_relu", fn, deriv, kinks=(0.0,))


# --- ELU: z for z > 0, alpha (e^z - 1) otherwise (alpha at the kink). ---------
def elu(alpha: float) -> Activation:
    def fn(z):
        # exp only of the non-positive part, so the unused branch never overflows
        # (an inf there would turn the where's gradient into NaN). exp(z) - 1, not
        # expm1: autodiff differentiates expm1 as expm1(z) + 1, which cancels to a
        # few digits for z << 0, while exp(z) - 1 is only ~1e-16 off in absolute terms.
        zneg = jnp.where(z > 0, 0.0, z)
        return jnp.where(z > 0, z, alpha * (jnp.exp(zneg) - 1.0))

    def deriv(z, a):
        zneg = jnp.where(z > 0, 0.0, z)
        return jnp.where(z > 0, 1.0, alpha * jnp.exp(zneg)).astype(z.dtype)

    return Activation("elu", fn, deriv, kinks=(0.0,))


# --- GELU, exact: z Phi(z); derivative Phi(z) + z phi(z). ---------------------
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu(z):
    return 0.5 * z * (1.0 + jax.lax.erf(z * _INV_SQRT2))


def _gelu_deriv(z, a):
    cdf = 0.5 * (1.0 + jax.lax.erf(z * _INV_SQRT2))
    pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)
    return cdf + z * pdf


# --- GELU, tanh approximation: 0.5 z (1 + tanh(c (z + 0.044715 z^3))). --------
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715


def _gelu_tanh(z):
    return 0.5 * z * (1.0 + jnp.tanh(_GELU_C * (z + _GELU_K * z**3)))


def _gelu_tanh_deriv(z, a):
    t = jnp.tanh(_GELU_C * (z + _GELU_K * z**3))
    # (1 - t)(1 + t), not 1 - t^2: no cancellation where |t| -> 1.
    dinner = _GELU_C * (1.0 + 3.0 * _GELU_K * z * z)  # d/dz of tanh's argument
    return 0.5 * (1.0 + t) + 0.5 * z * ((1.0 - t) * (1.0 + t)) * dinner


# --- Sigmoid: 1 / (1 + e^-z), via lax.logistic (stable for |z| up to 1e4). ----
def _sigmoid(z):
    return jax.nn.sigmoid(z)


def _sigmoid_deriv(z, a):
    return a * (1.0 - a)


# --- SiLU (swish): z sigmoid(z); derivative s + z s (1 - s). ------------------
def _silu(z):
    return z * jax.nn.sigmoid(z)


def _silu_deriv(z, a):
    s = jax.nn.sigmoid(z)
    return s + z * s * (1.0 - s)


# --- tanh: derivative 1 - tanh^2, as (1 - a)(1 + a) to keep digits near |a| = 1.
def _tanh(z):
    return jnp.tanh(z)


def _tanh_deriv(z, a):
    return (1.0 - a) * (1.0 + a)


# --- identity: a linear network, which collapses to one linear map. -----------
def _identity(z):
    return z


def _identity_deriv(z, a):
    return jnp.ones_like(z)


RELU = Activation("relu", _relu, _relu_deriv, kinks=(0.0,))
GELU = Activation("gelu", _gelu, _gelu_deriv)
GELU_TANH = Activation("gelu_tanh", _gelu_tanh, _gelu_tanh_deriv)
SIGMOID = Activation("sigmoid", _sigmoid, _sigmoid_deriv)
SILU = Activation("silu", _silu, _silu_deriv)
TANH = Activation("tanh", _tanh, _tanh_deriv)
IDENTITY = Activation("identity", _identity, _identity_deriv)

# Names accepted by MLPSpec(activation=...). maxout is not elementwise: see below.
ACTIVATION_NAMES = (
    "relu", "leaky_relu", "elu", "gelu", "gelu_tanh",
    "silu", "sigmoid", "tanh", "maxout", "identity",
)


def elementwise(name: str | Activation, *, leaky_slope: float = 0.01,
                elu_alpha: float = 1.0) -> Activation:
    """The :class:`Activation` for a built-in name (or the object itself)."""
    if isinstance(name, Activation):
        return name
    table = {
        "relu": RELU, "gelu": GELU, "gelu_tanh": GELU_TANH, "sigmoid": SIGMOID,
        "silu": SILU, "tanh": TANH, "identity": IDENTITY,
    }
    if name == "leaky_relu":
        return leaky_relu(leaky_slope)
    if name == "elu":
        return elu(elu_alpha)
    if name not in table:
        raise ValueError(
            f"no elementwise activation named {name!r}; expected one of "
            f"{', '.join(ACTIVATION_NAMES)} (maxout is handled by the network), "
            "or an Activation(name, fn, deriv) of your own"
        )
    return table[name]


# --- Maxout: h = max_k z_k over k affine pieces; the gradient goes to the -----
# first piece that attains the max (argmax's tie rule). The forward picks that
# same piece with take_along_axis, so autodiff follows the same convention at
# ties; jnp.max would split a tie evenly between the pieces.
def maxout(z: Array) -> tuple[Array, Array]:
    """Maxout over pieces.

    Args:
      z: pre-activations of shape ``(N, k, out)``.

    Returns:
      ``(h, idx)``: ``h`` of shape ``(N, out)``, ``idx`` of shape ``(N, 1, out)``
      the winning piece for each unit.
    """
    idx = jnp.argmax(z, axis=1, keepdims=True)  # (N, 1, out)
    return jnp.take_along_axis(z, idx, axis=1)[:, 0, :], idx


def maxout_backward(dh: Array, idx: Array, k: int) -> Array:
    """Route ``dh`` of shape ``(N, out)`` to the winning pieces: ``(N, k, out)``."""
    pieces = jnp.arange(k).reshape(1, k, 1)
    return jnp.where(pieces == idx, dh[:, None, :], 0.0).astype(dh.dtype)
