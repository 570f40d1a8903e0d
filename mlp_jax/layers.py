"""The affine map, dropout and input noise: each forward with its backward beside it.

Weights are ``(out, in)`` as in the lectures' ``f = W x``; a maxout layer's
weights carry a leading pieces axis, ``(k, out, in)``, and the einsums below
treat both with one ``...``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


# --- Affine: z = x W^T + b. ---------------------------------------------------
def affine(x: Array, W: Array, b: Array | None) -> Array:
    """``x`` (N, in), ``W`` (out, in) or (k, out, in) -> ``z`` (N, out) or (N, k, out)."""
    z = jnp.einsum("ni,...oi->n...o", x, W)
    return z if b is None else z + b


def affine_backward(dz: Array, x: Array, W: Array, *, need_dx: bool = True):
    """Backward of :func:`affine`.

    ``dW = dz^T x`` (the sum over examples of outer products), ``db = sum_n dz``,
    ``dx = dz W``.

    Returns:
      ``(dW, db, dx)``; ``dx`` is None when ``need_dx`` is False (the first
      layer, whose input is the data).
    """
    dW = jnp.einsum("n...o,ni->...oi", dz, x)
    db = jnp.sum(dz, axis=0)
    dx = jnp.einsum("n...o,...oi->ni", dz, W) if need_dx else None
    return dW, db, dx


# --- Inverted dropout: drop each unit with probability p, scale the rest by ---
# 1/(1-p) so evaluation needs no rescaling (CS231n "Neural Networks Part 2").
def dropout_mask(key: Array, p: float, shape, dtype) -> Array:
    """The mask ``m`` with ``dropout(h) = h * m``: 0 or ``1/(1-p)``."""
    keep = jax.random.bernoulli(key, 1.0 - p, shape)
    return jnp.where(keep, 1.0 / (1.0 - p), 0.0).astype(dtype)


def dropout_backward(dh_dropped: Array, mask: Array) -> Array:
    """``d(h * m)/dh = m``."""
    return dh_dropped * mask


# --- Gaussian input noise: x + sigma * eps. The data is not a parameter, so ---
# its backward is the identity and nothing is propagated to it.
def input_noise(key: Array, x: Array, sigma: float) -> Array:
    return x + sigma * jax.random.normal(key, x.shape, x.dtype)
