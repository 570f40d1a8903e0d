"""The hand-derived backward pass: no jax autodiff anywhere in here.

It walks the forward cache from the scores down to the first layer:

    dscores = dL_i/dscores / N                       (losses.py)
    dW, db, dh = affine_backward(dz, x, W)           (layers.py)
    dW += 2 reg W                                    (the L2 penalty)
    dh *= mask                                       (dropout, layers.py)
    dz = dh * act'(z)   or maxout routing           (activations.py)
    dz, dgamma, dbeta = normalize_backward(dz, ...)  (the norm, layers.py; batch norm in
                                                      evaluation: normalize_by_backward)

References: CS231n "Backpropagation, Intuitions" and "Neural Networks Case
Study" (the two-layer network's backward pass).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import activations, layers
from .network import (
    Params,
    forward_with_cache,
    l2_penalty,
    prepare_labels,
    public,
    resolve_hyper,
    stats_after,
)
from .spec import Hyper, MLPSpec

Array = jax.Array


def backprop(params: Params, x: Array, y: Array, spec: MLPSpec, *, hyper: Hyper | None = None,
             key: Array | None = None, train: bool = False, stats: tuple | None = None):
    """The loss and its gradient with respect to every parameter.

    Same arguments as :func:`mlp_jax.loss`. Pure, and fine under ``jit`` and ``vmap``.

    Returns:
      ``(loss, grads)``; ``grads`` has exactly the structure, shapes and
      dtypes of ``params``. Batch norm in training mode with ``stats`` given:
      ``(loss, grads, stats)``, the running statistics updated (``mlp_jax.network``).
    """
    value, grads, new_stats = backprop_and_stats(params, x, y, spec, resolve_hyper(spec, hyper),
                                                 key, train, stats)
    return public((value, grads), new_stats, stats, train)


def backprop_and_stats(params: Params, x: Array, y: Array, spec: MLPSpec, hyper: Hyper,
                       key: Array | None, train: bool, stats: tuple | None):
    """:func:`backprop` for internal callers: ``hyper`` given, and always ``(loss, grads,
    stats)``, the running statistics updated in training mode."""
    scores, cache = forward_with_cache(params, x, spec, hyper=hyper, key=key, train=train,
                                       stats=stats)
    N = scores.shape[0]
    y = prepare_labels(y, spec, N, scores.dtype)
    loss_fn = spec.loss_fn
    reg = jnp.asarray(hyper.reg, scores.dtype)
    value = jnp.mean(loss_fn.value(scores, y)) + l2_penalty(params, reg)

    act = spec.elementwise_activation
    dz = loss_fn.grad(scores, y) / N  # (N, C): d(mean loss)/dscores
    grads = [{} for _ in params]
    for layer in reversed(range(len(params))):
        p = params[layer]
        dW, db, dh = layers.affine_backward(dz, cache[layer]["x"], p["W"], need_dx=layer > 0)
        grads[layer]["W"] = dW + 2.0 * reg * p["W"]
        if "b" in p:
            grads[layer]["b"] = db
        if layer == 0:
            break
        below = cache[layer - 1]  # the hidden layer that fed this one
        if "mask" in below:
            dh = layers.dropout_backward(dh, below["mask"])
        if act is None:
            dz = activations.maxout_backward(dh, below["idx"], spec.maxout_k)
        else:
            dz = dh * act.deriv(below["z"], below["a"])
        if "norm" in below:  # through the norm, to the affine map's output
            gamma = params[layer - 1]["gamma"]
            if spec.batchnorm and not train:  # fixed running statistics: affine
                out = layers.normalize_by_backward(dz, below["norm"], gamma)
            else:  # statistics of z itself: over the batch (batch norm) or the features
                out = layers.normalize_backward(dz, below["norm"], gamma,
                                                axis=0 if spec.batchnorm else 1)
            dz, grads[layer - 1]["gamma"], grads[layer - 1]["beta"] = out
    grads = tuple({k: g[k] for k in p} for g, p in zip(grads, params))  # params' key order
    return value, grads, stats_after(stats, cache, spec, train)


def per_example_backprop(params: Params, x: Array, y: Array, spec: MLPSpec, *,
                         hyper: Hyper | None = None):
    """Each example's own gradient: ``vmap`` of :func:`backprop` over the batch.

    Returns:
      ``(losses (N,), grads)``; every leaf of ``grads`` has a leading axis of
      size N: ``grads[l]["W"][i]`` is the gradient of ``L_i + reg * sum W**2``.
      Not with batch norm: its examples are coupled through the batch statistics.
    """
    if spec.batchnorm:
        raise ValueError("per-example gradients are not defined with batch norm: in "
                         "training every example's output depends on the whole batch "
                         "through its statistics")
    def one(xi, yi):
        return backprop(params, xi[None], yi[None], spec, hyper=hyper)

    return jax.vmap(one)(x, y)
