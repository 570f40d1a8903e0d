"""The network as a pure function of its parameter pytree: init_params, forward, loss.

``params`` is a tuple with one dict per layer, ``{"W": (out, in), "b": (out,)}``
(``(k, out, in)`` and ``(k, out)`` for a maxout hidden layer). Hidden layers
apply the activation, then (in training mode) dropout; the last layer is
affine and gives the scores.

Batch norm (``MLPSpec(norm="batchnorm")``) keeps its running statistics out of the
params, in a pytree of their own: ``stats``, one ``{"mean": (out,), "var": (out,)}``
per hidden layer (``init_stats``). In evaluation mode (``train=False``) a batch-norm
network needs ``stats=`` and normalizes by them; in training mode it normalizes by the
batch's own statistics. Other networks have no statistics: ``stats`` is ``()`` for them
and changes nothing.

Two forms of the same functions:

* the public ones (``forward``, ``loss``, ``backprop.backprop``) keep their documented,
  simple results, and add the updated statistics as one more, last output only where
  they were asked for (training mode with ``stats=``: ``(scores, stats)``, ``(loss,
  stats)``, ``(loss, grads, stats)``); ``hyper=None`` means the spec's values, resolved by
  ``resolve_hyper`` where a public entry point (these, ``forward_with_cache``, training's
  step and epochs) takes it;
* the internal ones (``loss_and_stats``, ``backprop.backprop_and_stats``), which training
  builds on, take a ``Hyper`` and always return the statistics: their results never
  change shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from . import activations, layers
from .losses import CLASS
from .spec import Hyper, MLPSpec
from .validate import check_labels, check_params, check_stats, check_x

Array = jax.Array
Params = tuple  # tuple[dict[str, Array], ...]


def _check_key(key, what: str) -> None:
    if key is None or isinstance(key, (int, float)) or not hasattr(key, "dtype"):
        raise TypeError(f"{what} needs a jax.random key, e.g. jax.random.key(0); got {key!r}")


def init_params(key: Array, spec: MLPSpec) -> Params:
    """Random weights and (but for ``init="torch"``) zero biases for ``spec``.

    Args:
      key: a ``jax.random`` key, split once into one key per layer.
      spec: the architecture; ``spec.init`` picks He (std ``sqrt(2/in)``),
        Xavier/Glorot (std ``sqrt(2/(in+out))``), ``weight_scale * randn``, or
        PyTorch's ``nn.Linear`` default (``"torch"``: ``W`` and ``b`` uniform on
        ``±1/sqrt(in)``).

    Returns:
      A tuple of ``spec.num_layers`` dicts: ``W`` of shape ``(out, in)``
      (``(k, out, in)`` for maxout hidden layers), ``b`` of shape ``(out,)``
      (``(k, out)``), and with a norm, hidden layers' ``gamma`` (ones) and ``beta``
      (zeros) of shape ``(out,)``; in ``spec.dtype``. Batch norm's hidden layers have no
      ``b``: the batch mean would subtract it (``beta`` takes its role; Ioffe & Szegedy).
    """
    _check_key(key, "init_params")
    dtype = jnp.dtype(spec.dtype)
    keys = jax.random.split(key, spec.num_layers)
    params = []
    for k, shapes in zip(keys, spec.param_shapes()):
        fan_out, fan_in = shapes["W"][-2:]
        if spec.init == "torch":  # nn.Linear's default: W and b ~ U(-1/sqrt(in), 1/sqrt(in))
            bound = 1.0 / math.sqrt(fan_in)
            kw, kb = jax.random.split(k)
            layer = {"W": jax.random.uniform(kw, shapes["W"], dtype, -bound, bound)}
            if "b" in shapes:
                layer["b"] = jax.random.uniform(kb, shapes["b"], dtype, -bound, bound)
        else:
            std = {
                "he": math.sqrt(2.0 / fan_in),
                "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
                "normal": spec.weight_scale,
            }[spec.init]
            layer = {"W": std * jax.random.normal(k, shapes["W"], dtype)}
            if "b" in shapes:
                layer["b"] = jnp.zeros(shapes["b"], dtype)
        if "gamma" in shapes:  # the norm starts as the identity on normalized values
            layer["gamma"] = jnp.ones(shapes["gamma"], dtype)
            layer["beta"] = jnp.zeros(shapes["beta"], dtype)
        params.append(layer)
    return tuple(params)


def init_stats(spec: MLPSpec) -> tuple:
    """Batch norm's running statistics before any training: mean 0 and variance 1 per
    hidden unit, in the params' dtype (float32 at least); ``()`` without batch norm."""
    if not spec.batchnorm:
        return ()
    dtype = jnp.promote_types(spec.dtype, jnp.float32)
    return tuple({"mean": jnp.zeros((h,), dtype), "var": jnp.ones((h,), dtype)}
                 for h in spec.sizes[1:-1])


def updated_stats(stats: tuple, cache: list[dict[str, Array]], spec: MLPSpec) -> tuple:
    """The running statistics after one training-mode batch whose ``cache`` holds each
    layer's batch ``moments``: ``m * running + (1 - m) * batch``, ``m = norm_momentum``."""
    if not spec.batchnorm:
        return ()
    m = spec.norm_momentum
    return tuple({k: m * s[k] + (1.0 - m) * v.astype(s[k].dtype)
                  for k, v in zip(("mean", "var"), entry["moments"])}
                 for s, entry in zip(stats, cache))


def forward_with_cache(params: Params, x: Array, spec: MLPSpec, *, hyper: Hyper | None = None,
                       key: Array | None = None, train: bool = False, stats: tuple | None = None
                       ) -> tuple[Array, list[dict[str, Array]]]:
    """Scores and what the backward pass needs, layer by layer.

    Returns:
      ``(scores, cache)``: scores of shape ``(N, C)``; ``cache[l]`` holds the
      layer's input ``x``, pre-activation ``z`` (the activation's input: after the
      norm, when there is one) and, for hidden layers, the activation ``a`` (before
      dropout), the dropout ``mask``, maxout ``idx``, the norm's ``norm`` cache and, for
      batch norm in training, the batch's ``moments`` (mean, variance), each ``(out,)``.
    """
    check_params(params, spec)
    check_x(x, spec)
    batch_stats = spec.batchnorm and train
    if batch_stats and x.shape[0] < 2:
        raise ValueError(f"batch norm in training mode needs at least 2 examples per batch; "
                         f"got {x.shape[0]}: one example has variance 0, so every unit "
                         "would be normalized to its beta and nothing would be learned "
                         "from x (for one example, use evaluation mode with the running "
                         "statistics, or layer norm)")
    if spec.batchnorm and (not train or stats is not None):  # needed, or given to update
        check_stats(stats, spec)
    dtype = params[0]["W"].dtype
    h = jnp.asarray(x, dtype)  # (N, D)

    hyper = resolve_hyper(spec, hyper)
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
        if batch_stats:  # batch norm in training: each feature over the batch
            mean, var = layers.mean_var(z, axis=0)
            z, entry["norm"] = layers.normalize_by(z, mean, var, p["gamma"], p["beta"],
                                                   spec.norm_eps)
            entry["moments"] = (mean[0], var[0])
        elif spec.batchnorm:  # in evaluation: by the running statistics
            s = stats[layer]
            z, entry["norm"] = layers.normalize_by(z, s["mean"].astype(dtype),
                                                   s["var"].astype(dtype), p["gamma"],
                                                   p["beta"], spec.norm_eps)
        elif spec.norm is not None:  # layer norm: over each example's features
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


def resolve_hyper(spec: MLPSpec, hyper: Hyper | None) -> Hyper:
    """``hyper``, or the spec's own values when None: the public functions' one rule (the
    internal ones take a ``Hyper``)."""
    return spec.hyper() if hyper is None else hyper


def stats_after(stats: tuple | None, cache, spec: MLPSpec, train: bool):
    """The running statistics after a pass: updated in training mode (where given), as
    they were otherwise."""
    return updated_stats(stats, cache, spec) if train and stats is not None else stats


def public(out, new_stats, stats: tuple | None, train: bool):
    """A public function's documented form: ``out`` alone, or followed by the updated
    running statistics where they were asked for (training mode with ``stats`` given).
    The internal functions (:func:`loss_and_stats`, ``backprop.backprop_and_stats``)
    always return the statistics."""
    if not train or stats is None:
        return out
    return (*out, new_stats) if isinstance(out, tuple) else (out, new_stats)


def forward(params: Params, x: Array, spec: MLPSpec, *, hyper: Hyper | None = None,
            key: Array | None = None, train: bool = False, stats: tuple | None = None):
    """The class scores: ``x`` of shape ``(N, D)`` -> ``(N, C)``.

    In training mode (``train=True``) dropout and input noise are applied,
    drawn from ``key``; at evaluation both are the identity. Their rates come
    from ``hyper`` (``spec.hyper()`` when None; may be traced arrays, for sweeps).
    ``stats``: batch norm's running statistics (the module's contract: needed in
    evaluation; in training, ``(scores, stats)`` is returned with them updated).
    """
    scores, cache = forward_with_cache(params, x, spec, hyper=hyper, key=key, train=train,
                                       stats=stats)
    return public(scores, stats_after(stats, cache, spec, train), stats, train)


def prepare_labels(y: Array, spec: MLPSpec, n: int, dtype) -> Array:
    """Check ``y`` against the loss and give it the dtype the loss computes in."""
    check_labels(y, spec, n)
    y = jnp.asarray(y)
    return y if spec.loss_fn.labels == CLASS else y.astype(dtype)


def l2_penalty(params: Params, reg) -> Array:
    """``reg * sum of W**2`` over all layers (biases are not regularized)."""
    return reg * sum(jnp.sum(p["W"] ** 2) for p in params)


def loss(params: Params, x: Array, y: Array, spec: MLPSpec, *, hyper: Hyper | None = None,
         key: Array | None = None, train: bool = False, stats: tuple | None = None):
    """``1/N sum_i L_i + reg * sum W**2``: the scalar that training minimizes.

    Args:
      params, x, spec: as in :func:`forward`.
      y: labels, as the loss needs them (``losses.LABEL_KINDS``).
      hyper: reg, dropout and input noise (``spec.hyper()`` when None; may be traced
        arrays), e.g. ``spec.hyper()._replace(reg=0.0)`` for the data loss alone.
      key, train, stats: as in :func:`forward`; in training mode with ``stats``,
        ``(loss, stats)`` (for ``jax.value_and_grad(loss, has_aux=True)``).
    """
    value, new_stats = loss_and_stats(params, x, y, spec, resolve_hyper(spec, hyper), key,
                                      train, stats)
    return public(value, new_stats, stats, train)


def loss_and_stats(params: Params, x: Array, y: Array, spec: MLPSpec, hyper: Hyper,
                   key: Array | None, train: bool, stats: tuple | None):
    """:func:`loss` for internal callers: ``hyper`` given, and always ``(loss, stats)``,
    the running statistics updated in training mode (``()`` in, ``()`` out without batch
    norm)."""
    scores, cache = forward_with_cache(params, x, spec, hyper=hyper, key=key, train=train,
                                       stats=stats)
    y = prepare_labels(y, spec, scores.shape[0], scores.dtype)
    data_loss = jnp.mean(spec.loss_fn.value(scores, y))
    value = data_loss + l2_penalty(params, jnp.asarray(hyper.reg, scores.dtype))
    return value, stats_after(stats, cache, spec, train)
