"""The affine map, normalization, dropout and input noise: each forward with its
backward beside it.

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


# --- Normalization: y = gamma * xhat + beta, xhat = (z - mean) / sqrt(var + eps), ---
# the mean and the (biased) variance taken over ``axis``: the features of each example
# (layer norm, Ba et al. 2016: axis 1) or the batch, per feature (batch norm in
# training, Ioffe & Szegedy 2015: axis 0); in evaluation, batch norm normalizes by
# fixed running statistics instead (normalize_by). gamma and beta are per feature, (out,).
def mean_var(z: Array, axis: int) -> tuple[Array, Array]:
    """The mean and the biased variance (divided by the count) over ``axis``, kept as an
    axis of size 1."""
    mean = jnp.mean(z, axis=axis, keepdims=True)
    return mean, jnp.mean(jnp.square(z - mean), axis=axis, keepdims=True)


def normalize_by(z: Array, mean: Array, var: Array, gamma: Array, beta: Array, eps: float):
    """``gamma * (z - mean) / sqrt(var + eps) + beta`` for given statistics: ``(y, cache)``,
    the cache ``(xhat, inv_std)`` being what the backward needs."""
    inv_std = jax.lax.rsqrt(var + jnp.asarray(eps, z.dtype))
    xhat = (z - mean) * inv_std
    return gamma * xhat + beta, (xhat, inv_std)


def normalize_by_backward(dy: Array, cache, gamma: Array):
    """Backward of :func:`normalize_by` with the statistics held fixed (batch norm in
    evaluation mode, by its running statistics): an affine map per feature, so
    ``dz = dy * gamma * inv_std``. Returns ``(dz, dgamma, dbeta)``."""
    xhat, inv_std = cache
    return dy * gamma * inv_std, jnp.sum(dy * xhat, axis=0), jnp.sum(dy, axis=0)


def normalize(z: Array, gamma: Array, beta: Array, eps: float, axis: int):
    """:func:`normalize_by` ``z``'s own statistics over ``axis``: ``(y, cache)``."""
    return normalize_by(z, *mean_var(z, axis), gamma, beta, eps)


def normalize_backward(dy: Array, cache, gamma: Array, axis: int):
    """Backward of :func:`normalize`, in closed form.

    With ``g = dy * gamma`` (the gradient reaching ``xhat``) and ``M`` the number of
    values averaged over ``axis``: ``xhat`` depends on ``z`` directly and through the
    mean and the variance. ``d mean/dz = 1/M``, ``d var/dz = 2 (z - mean) / M``, and
    ``d xhat/d var = -xhat / (2 (var + eps))``; summing the three paths and writing
    ``z - mean = xhat / inv_std``, every ``M`` cancels into means:

        dz = inv_std * (g - mean(g) - xhat * mean(g * xhat))      (means over ``axis``)

    (CS231n assignment 2's "simplified" batch norm backward, the same with axis 1 for
    layer norm.) ``dgamma = sum_n dy * xhat`` and ``dbeta = sum_n dy`` sum over the
    batch, whatever the axis.

    Returns:
      ``(dz, dgamma, dbeta)``.
    """
    xhat, inv_std = cache
    g = dy * gamma
    dz = inv_std * (g - jnp.mean(g, axis=axis, keepdims=True)
                    - xhat * jnp.mean(g * xhat, axis=axis, keepdims=True))
    return dz, jnp.sum(dy * xhat, axis=0), jnp.sum(dy, axis=0)


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
