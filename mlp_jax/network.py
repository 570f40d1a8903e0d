"""The network as a pure function of its parameter pytree: init_params, forward, loss.

``params`` is a tuple with one dict per layer, ``{"W": (out, in), "b": (out,)}``
(``(k, out, in)`` and ``(k, out)`` for a maxout hidden layer). Hidden layers
apply the activation, then (in training mode) dropout; the last layer is
affine and gives the scores.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from . import activations, layers
from .losses import CLASS
from .spec import Hyper, MLPSpec
from .validate import check_labels, check_params, check_x, param_shapes

Array = jax.Array
Params = tuple  # tuple[dict[str, Array], ...]


def _check_key(key, what: str) -> None:
    if key is None or isinstance(key, (int, float)) or not hasattr(key, "dtype"):
        raise TypeError(f"{what} needs a jax.random key, e.g. jax.random.key(0); got {key!r}")


def init_params(key: Array, spec: MLPSpec) -> Params:
    """Random weights and zero biases for ``spec``.

    Args:
      key: a ``jax.random`` key, split once into one key per layer.
      spec: the architecture; ``spec.init`` picks He (std ``sqrt(2/in)``),
        Xavier/Glorot (std ``sqrt(2/(in+out))``) or ``weight_scale * randn``.

    Returns:
      A tuple of ``spec.num_layers`` dicts: ``W`` of shape ``(out, in)``
      (``(k, out, in)`` for maxout hidden layers), ``b`` of shape ``(out,)``
      (``(k, out)``), and with a norm, hidden layers' ``gamma`` (ones) and ``beta``
      (zeros) of shape ``(out,)``; in ``spec.dtype``.
    """
    _check_key(key, "init_params")
    dtype = jnp.dtype(spec.dtype)
    keys = jax.random.split(key, spec.num_layers)
    params = []
    for k, shapes in zip(keys, param_shapes(spec)):
        fan_out, fan_in = shapes["W"][-2:]
        std = {
            "he": math.sqrt(2.0 / fan_in),
            "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
            "normal": spec.weight_scale,
        }[spec.init]
        layer = {"W": std * jax.random.normal(k, shapes["W"], dtype)}
        if spec.bias:
            layer["b"] = jnp.zeros(shapes["b"], dtype)
        if "gamma" in shapes:  # the norm starts as the identity on normalized values
            layer["gamma"] = jnp.ones(shapes["gamma"], dtype)
            layer["beta"] = jnp.zeros(shapes["beta"], dtype)
        params.append(layer)
    return tuple(params)


def forward_with_cache(params: Params, x: Array, spec: MLPSpec, *, hyper: Hyper | None = None,
                       key: Array | None = None, train: bool = False
                       ) -> tuple[Array, list[dict[str, Array]]]:
    """Scores and what the backward pass needs, layer by layer.

    Returns:
      ``(scores, cache)``: scores of shape ``(N, C)``; ``cache[l]`` holds the
      layer's input ``x``, pre-activation ``z`` (the activation's input: after the
      norm, when there is one) and, for hidden layers, the activation ``a`` (before
      dropout), the dropout ``mask``, maxout ``idx`` and the norm's ``norm`` cache.
    """
    check_params(params, spec)
    check_x(x, spec)
    dtype = params[0]["W"].dtype
    h = jnp.asarray(x, dtype)  # (N, D)

    hyper = spec.hyper() if hyper is None else hyper
    stochastic = train and spec.stochastic  # static: whether the spec has dropout or noise
    if stochastic:
        _check_key(key, f"training mode with dropout={spec.dropout}, "
                        f"input_noise={spec.input_noise}")
        keys = jax.random.split(key, spec.num_layers)  # [input noise, dropout per hidden layer]
    if stochastic and spec.input_noise > 0:
        h = layers.input_noise(keys[0], h, jnp.asarray(hyper.input_noise, dtype))

    act = spec.elementwise_activation
    cache = []
    for layer, p in enumerate(params[:-1]):
        z = layers.affine(h, p["W"], p.get("b"))  # (N, H) or (N, k, H) for maxout
        entry = {"x": h}
        if spec.norm is not None:  # layer norm: over each example's features
            z, entry["norm"] = layers.normalize(z, p["gamma"], p["beta"], spec.norm_eps, axis=1)
        entry["z"] = z  # the activation's input
        if act is None:
            a, entry["idx"] = activations.maxout(z)
        else:
            a = act.fn(z)
        entry["a"] = a
        if stochastic and spec.dropout > 0:
            entry["mask"] = layers.dropout_mask(keys[layer + 1], hyper.dropout, a.shape, a.dtype)
            a = a * entry["mask"]
        cache.append(entry)
        h = a
    scores = layers.affine(h, params[-1]["W"], params[-1].get("b"))  # (N, C)
    cache.append({"x": h, "z": scores})
    return scores, cache


def forward(params: Params, x: Array, spec: MLPSpec, *, hyper: Hyper | None = None,
            key: Array | None = None, train: bool = False) -> Array:
    """The class scores: ``x`` of shape ``(N, D)`` -> ``(N, C)``.

    In training mode (``train=True``) dropout and input noise are applied,
    drawn from ``key``; at evaluation both are the identity. Their rates come
    from ``hyper`` (``spec.hyper()`` when None; may be traced arrays, for sweeps).
    """
    return forward_with_cache(params, x, spec, hyper=hyper, key=key, train=train)[0]


def prepare_labels(y: Array, spec: MLPSpec, n: int, dtype) -> Array:
    """Check ``y`` against the loss and give it the dtype the loss computes in."""
    check_labels(y, spec, n)
    y = jnp.asarray(y)
    return y if spec.loss_fn.labels == CLASS else y.astype(dtype)


def l2_penalty(params: Params, reg) -> Array:
    """``reg * sum of W**2`` over all layers (biases are not regularized)."""
    return reg * sum(jnp.sum(p["W"] ** 2) for p in params)


def resolve_reg(hyper: Hyper | None, spec: MLPSpec, dtype):
    """The L2 strength of ``hyper`` (``spec.reg`` when None), in the dtype of the loss."""
    return jnp.asarray(spec.reg if hyper is None else hyper.reg, dtype)


def loss(params: Params, x: Array, y: Array, spec: MLPSpec, *, hyper: Hyper | None = None,
         key: Array | None = None, train: bool = False) -> Array:
    """``1/N sum_i L_i + reg * sum W**2``: the scalar that training minimizes.

    Args:
      params, x, spec: as in :func:`forward`.
      y: labels, as the loss needs them (``losses.LABEL_KINDS``).
      hyper: reg, dropout and input noise (``spec.hyper()`` when None; may be traced
        arrays), e.g. ``spec.hyper()._replace(reg=0.0)`` for the data loss alone.
      key, train: as in :func:`forward`.
    """
    scores, _ = forward_with_cache(params, x, spec, hyper=hyper, key=key, train=train)
    y = prepare_labels(y, spec, scores.shape[0], scores.dtype)
    data_loss = jnp.mean(spec.loss_fn.value(scores, y))
    return data_loss + l2_penalty(params, resolve_reg(hyper, spec, scores.dtype))
