"""MLPSpec, the static architecture of a network, and Hyper, the hyperparameters a sweep varies.

``MLPSpec`` is frozen and hashable: ``jit`` takes it as static, so everything in it
is baked into the compiled program (sizes, activation, loss, init, bias, dtype, and
*whether* dropout and input noise exist). ``Hyper`` holds the values a sweep varies
(reg, dropout rate, input-noise std) as leaves of a pytree, passed beside params, so
changing them never recompiles. ``MLPSpec(reg=..., dropout=..., input_noise=...)``
gives the defaults, ``spec.hyper()``; a spec with ``dropout=0`` has no dropout in its
program, whatever a ``Hyper`` says (likewise input noise).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .activations import ACTIVATION_NAMES, Activation, elementwise
from .losses import BINARY01, BINARY_PM1, CLASS, LOSS_NAMES, LOSSES, REAL, Loss, get_loss

INITS = ("he", "xavier", "normal", "torch")
NORMS = ("batchnorm", "layernorm")  # or None
DTYPES = ("float32", "float64", "bfloat16", "float16")


class Hyper(NamedTuple):
    """The hyperparameters that are data, not architecture: a pytree of numbers or arrays
    (a leading configuration axis under ``vmap``). Each is cast to the dtype it is used in."""

    reg: Any = 0.0  # L2 strength
    dropout: Any = 0.0  # drop probability; only where the spec has dropout
    input_noise: Any = 0.0  # std of the input noise; only where the spec has noise


@dataclass(frozen=True)
class MLPSpec:
    """A fully connected network: frozen and hashable, so ``jit`` can take it as static.

    Attributes:
      sizes: layer widths ``(D, H1, ..., C)``: input size, hidden sizes, number
        of scores. ``(D, C)`` is the linear classifier (no hidden layer).
      activation: a name from ``ACTIVATION_NAMES`` or an ``Activation`` of your own.
      loss: a name from ``LOSS_NAMES`` or a ``Loss`` of your own.
      reg: default L2 strength; the loss adds ``reg * sum(W**2)`` over all weights.
      init: ``"he"`` (std sqrt(2/in)), ``"xavier"`` (std sqrt(2/(in+out))),
        ``"normal"`` (CS231n's ``weight_scale * randn``), or ``"torch"`` (PyTorch's
        ``nn.Linear`` default: weights and biases uniform on ±1/sqrt(in)).
      weight_scale: the std for ``init="normal"``.
      bias: whether layers have biases (``b`` of shape ``(out,)``).
      leaky_slope: the negative-side slope of ``leaky_relu``.
      elu_alpha: ``alpha`` of ``elu``.
      maxout_k: pieces per maxout unit.
      dropout: default drop probability p of hidden units during training (inverted
        dropout), in [0, 1); 0 leaves dropout out of the network.
      input_noise: default std of Gaussian noise added to inputs during training; 0
        leaves the noise out.
      (``reg``, ``dropout`` and ``input_noise`` are the defaults of :meth:`hyper`; every
      function that takes ``hyper=`` uses them when it is None.)
      dtype: parameter dtype made by ``init_params``.
      norm: None, ``"batchnorm"`` or ``"layernorm"``: each hidden layer is affine -> norm
        -> activation -> dropout, the norm with a learnable scale ``gamma`` and shift
        ``beta`` (``(out,)``, in the params beside ``W`` and ``b``). Layer norm normalizes
        each example over its features (Ba et al. 2016); batch norm each feature over the
        batch in training and by its running statistics in evaluation (Ioffe & Szegedy
        2015; the statistics are a pytree of their own, ``network.init_stats``), its
        hidden layers without ``b``: the batch mean subtracts any bias, whose gradient is
        then 0 to rounding (and Adam, dividing by the gradient's size, would turn that
        rounding into steps of size lr). Not with maxout (which unit would a piece's
        statistics belong to?): refused.
      norm_eps: added to the variance before the square root.
      norm_momentum: batch norm's running averages, as CS231n's:
        ``running = momentum * running + (1 - momentum) * batch`` (PyTorch's
        ``momentum=0.1`` is this 0.9), the batch variance biased (divided by N).
    """

    sizes: tuple[int, ...]
    activation: str | Activation = "relu"
    loss: str | Loss = "softmax"
    reg: float = 0.0
    init: str = "he"
    weight_scale: float = 1e-2
    bias: bool = True
    leaky_slope: float = 0.01
    elu_alpha: float = 1.0
    maxout_k: int = 2
    dropout: float = 0.0
    input_noise: float = 0.0
    dtype: str = "float32"
    norm: str | None = None
    norm_eps: float = 1e-5
    norm_momentum: float = 0.9

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"sizes must be a sequence of ints like (3072, 100, 10); got {sizes!r}")
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"sizes needs at least an input and an output size, like (3072, 10); got {sizes!r}"
            )
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
                raise ValueError(f"every size must be a positive int; got {sizes!r}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))

        if not isinstance(self.activation, Activation) and self.activation not in ACTIVATION_NAMES:
            raise ValueError(
                f"unknown activation {self.activation!r}; expected one of "
                f"{', '.join(ACTIVATION_NAMES)}, or an Activation(name, fn, deriv) of your own"
            )
        loss = get_loss(self.loss)  # raises with the list of valid names
        if loss.labels in (BINARY01, BINARY_PM1) and self.sizes[-1] != 1:
            raise ValueError(
                f"loss {loss.name!r} is binary and needs one output score: sizes[-1] must be 1, "
                f"got sizes={self.sizes}"
            )
        _check_number("reg", self.reg, low=0.0)
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; expected one of {', '.join(INITS)}")
        _check_number("weight_scale", self.weight_scale, low=0.0, strict=True)
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be True or False; got {self.bias!r}")
        _check_number("leaky_slope", self.leaky_slope)
        _check_number("elu_alpha", self.elu_alpha, low=0.0, strict=True)
        if isinstance(self.maxout_k, bool) or not isinstance(self.maxout_k, numbers.Integral) \
                or self.maxout_k < 1:
            raise ValueError(f"maxout_k must be an int >= 1; got {self.maxout_k!r}")
        _check_number("dropout", self.dropout, low=0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"dropout is a drop probability in [0, 1); got {self.dropout!r}")
        _check_number("input_noise", self.input_noise, low=0.0)
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}")
        if self.norm is not None and self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected None or one of "
                             f"{', '.join(NORMS)}")
        if self.norm is not None and self.is_maxout:
            raise ValueError(f"norm={self.norm!r} with maxout is not supported: a maxout "
                             "unit's pieces would each need their own statistics; use "
                             "another activation, or no norm")
        _check_number("norm_eps", self.norm_eps, low=0.0, strict=True)
        _check_number("norm_momentum", self.norm_momentum, low=0.0)
        if self.norm_momentum >= 1.0:
            raise ValueError(f"norm_momentum must be in [0, 1) (the running averages' decay; "
                             f"1 would never update them); got {self.norm_momentum!r}")
        if isinstance(self.activation, Activation):
            _check_activation(self.activation, self.dtype)
        if isinstance(self.loss, Loss) and self.loss not in LOSSES.values():
            _check_loss(self.loss, self.sizes[-1], self.dtype)

    def hyper(self, dtype=None) -> Hyper:
        """The spec's ``reg``, ``dropout`` and ``input_noise`` as a :class:`Hyper`: Python
        numbers, or arrays of ``dtype`` when given (e.g. the params' dtype, for training)."""
        values = (self.reg, self.dropout, self.input_noise)
        return Hyper(*(values if dtype is None else (jnp.asarray(v, dtype) for v in values)))

    def param_shapes(self) -> tuple[dict[str, tuple[int, ...]], ...]:
        """The shape of every leaf of ``init_params(key, spec)``: per layer, ``W`` (out,
        in), ``b`` (out,) and, with a norm, ``gamma`` and ``beta`` (out,); a maxout hidden
        layer's ``W`` and ``b`` have a leading axis of its ``maxout_k`` pieces."""
        shapes = []
        for layer, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            hidden = layer < self.num_layers - 1
            pieces = (self.maxout_k,) if self.is_maxout and hidden else ()
            leaf = {"W": pieces + (fan_out, fan_in)}
            if self.bias and not (hidden and self.batchnorm):  # the batch mean cancels b
                leaf["b"] = pieces + (fan_out,)
            if self.norm is not None and hidden:
                leaf["gamma"] = leaf["beta"] = (fan_out,)
            shapes.append(leaf)
        return tuple(shapes)

    @property
    def num_layers(self) -> int:
        """Number of weight layers (the lectures' "N-layer network")."""
        return len(self.sizes) - 1

    @property
    def is_maxout(self) -> bool:
        return self.activation == "maxout"

    @property
    def stochastic(self) -> bool:
        """True when training mode draws random numbers (dropout or input noise); static."""
        return self.dropout > 0 or self.input_noise > 0

    @property
    def batchnorm(self) -> bool:
        """True when the network has batch norm: running statistics beside the params."""
        return self.norm == "batchnorm"

    @property
    def loss_fn(self) -> Loss:
        return get_loss(self.loss)

    @property
    def elementwise_activation(self) -> Activation | None:
        """The hidden layers' Activation (slope and alpha applied); None for maxout."""
        if self.is_maxout:
            return None
        return elementwise(self.activation, leaky_slope=self.leaky_slope,
                           elu_alpha=self.elu_alpha)

    @property
    def activation_name(self) -> str:
        a = self.activation
        return a.name if isinstance(a, Activation) else a


def _shapes(fn, *args):
    """What ``fn`` returns for arguments of these shapes: traced once, nothing computed."""
    return jax.tree.map(lambda a: tuple(a.shape), jax.eval_shape(fn, *args))


def _check_activation(act: Activation, dtype: str) -> None:
    """Try a user's Activation on a (2, 3) input once, so a wrong signature is one clear
    error here rather than a JAX trace inside the network."""
    z = jax.ShapeDtypeStruct((2, 3), jnp.dtype(dtype))
    for what, fn, args, expected in (("fn", act.fn, (z,), "fn(z) -> a"),
                                     ("deriv", act.deriv, (z, z), "deriv(z, a) -> da/dz")):
        try:
            got = _shapes(fn, *args)
        except Exception as e:  # noqa: BLE001 -- any failure means the signature is wrong
            raise TypeError(f"activation {act.name!r}: {what} failed on a (2, 3) {dtype} "
                            f"array; expected {expected}, elementwise: "
                            f"{type(e).__name__}: {e}") from e
        if got != (2, 3):
            raise TypeError(f"activation {act.name!r}: {what} must return an array of z's "
                            f"shape (expected {expected}, elementwise); on a (2, 3) array "
                            f"it returned shape {got}")


def _check_loss(loss: Loss, C: int, dtype: str) -> None:
    """Try a user's Loss on 2 examples of C scores once (see ``_check_activation``)."""
    scores = jax.ShapeDtypeStruct((2, C), jnp.dtype(dtype))
    y = {CLASS: jax.ShapeDtypeStruct((2,), jnp.int32),
         REAL: scores}.get(loss.labels, jax.ShapeDtypeStruct((2,), jnp.dtype(dtype)))
    want = {"value": (2,), "grad": (2, C), "kink_state": None}
    for what in want:
        fn = getattr(loss, what)
        if fn is None:
            continue
        expected = f"{what}(scores (N, C), y) -> " + {"value": "(N,)", "grad": "(N, C)",
                                                       "kink_state": "bool array"}[what]
        try:
            got = _shapes(fn, scores, y)
        except Exception as e:  # noqa: BLE001 -- any failure means the signature is wrong
            raise TypeError(f"loss {loss.name!r}: {what} failed on scores of shape (2, {C}) "
                            f"and labels of shape {y.shape}; expected {expected}: "
                            f"{type(e).__name__}: {e}") from e
        if want[what] is not None and got != want[what]:
            raise TypeError(f"loss {loss.name!r}: {what} must return shape {want[what]} for "
                            f"scores of shape (2, {C}) (expected {expected}); it returned "
                            f"shape {got}")


def _check_number(name, value, low=None, strict=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"{name} must be {bound}; got {value!r}")


__all__ = ["Hyper", "MLPSpec", "INITS", "LOSS_NAMES", "NORMS"]
