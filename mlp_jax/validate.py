"""Input checks with errors that say what was expected, what was given, and how to fix it.

Shape, dtype and structure checks read only static information, so they run
at trace time and cost nothing inside a jitted step. Checks that need values
(label ranges, NaN) run only on concrete arrays, i.e. outside ``jit``;
under tracing they are skipped, never turned into device syncs. ``check_features``
checks a feature matrix of one's own data (numeric, finite, within float32) before it
becomes a dataset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import files
from .dataset import row_blocks
from .losses import BINARY01, BINARY_PM1, CLASS, REAL
from .spec import MLPSpec


def is_concrete(a) -> bool:
    """True for a value we can read now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(a, jax.core.Tracer)


def check_params(params, spec: MLPSpec) -> None:
    """Params must be a sequence of per-layer dicts with the spec's shapes."""
    expected = spec.param_shapes()
    if not isinstance(params, (tuple, list)) or len(params) != len(expected):
        got = f"{type(params).__name__} of length {len(params)}" \
            if isinstance(params, (tuple, list)) else type(params).__name__
        raise ValueError(
            f"params must be a tuple of {len(expected)} layer dicts for sizes={spec.sizes}; "
            f"got a {got}. Make them with init_params(key, spec)."
        )
    for layer, (p, want) in enumerate(zip(params, expected), start=1):
        if not isinstance(p, dict) or set(p) != set(want):
            keys = sorted(p) if isinstance(p, dict) else type(p).__name__
            raise ValueError(
                f"layer {layer} of params must be a dict with keys {sorted(want)} "
                f"(bias={spec.bias}); got {keys}"
            )
        for name, shape in want.items():
            got = tuple(np.shape(p[name]))
            if got != shape:
                raise ValueError(
                    f"params layer {layer} {name}{layer} has shape {got}, but the spec "
                    f"(sizes={spec.sizes}, activation={spec.activation_name!r}) needs {shape}"
                )


def check_stats(stats, spec: MLPSpec) -> None:
    """Batch norm in evaluation mode needs its running statistics, one ``{"mean", "var"}``
    of shape ``(out,)`` per hidden layer."""
    widths = spec.sizes[1:-1]
    if stats is None:
        raise ValueError("batch norm in evaluation mode normalizes by the running statistics:"
                         " pass stats= (TrainState.stats, FitResult.best_stats, "
                         "load_params(path).stats, or network.init_stats(spec) before training)"
                         ", or train=True to use the batch's own")
    ok = isinstance(stats, (tuple, list)) and len(stats) == len(widths) and all(
        isinstance(s, dict) and set(s) == {"mean", "var"}
        and all(tuple(np.shape(s[k])) == (h,) for k in s) for s, h in zip(stats, widths))
    if not ok:
        raise ValueError(f"stats must be {len(widths)} dicts of 'mean' and 'var' shaped "
                         f"{[(h,) for h in widths]} (network.init_stats(spec)); got "
                         f"{jax.tree.map(np.shape, stats)}")


def check_x(x, spec: MLPSpec) -> None:
    shape = np.shape(x)
    if len(shape) != 2 or shape[1] != spec.sizes[0]:
        raise ValueError(
            f"x must have shape (N, {spec.sizes[0]}) (a batch of rows of {spec.sizes[0]} "
            f"features); got shape {shape}"
        )
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype  # no device copy
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"x must hold real numbers; got dtype {dtype}")


def check_labels(y, spec: MLPSpec, n: int) -> None:
    """Labels must match the loss: see ``losses.LABEL_KINDS``."""
    loss = spec.loss_fn
    shape = np.shape(y)
    dtype = y.dtype if hasattr(y, "dtype") else np.asarray(y).dtype
    C = spec.sizes[-1]
    if loss.labels == REAL:
        if shape != (n, C):
            raise ValueError(
                f"loss {loss.name!r} needs real targets of shape ({n}, {C}); got {shape}")
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"loss {loss.name!r} needs float targets; got dtype {dtype}")
        return
    if shape != (n,):
        raise ValueError(f"loss {loss.name!r} needs labels of shape ({n},), one per row of x; "
                         f"got {shape}")
    if loss.labels == CLASS:
        if not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(
                f"loss {loss.name!r} needs integer class labels in [0, {C}); got dtype {dtype}. "
                "Convert with y.astype(int)."
            )
        if is_concrete(y) and n:
            yn = np.asarray(y)
            lo, hi = int(yn.min()), int(yn.max())
            if lo < 0 or hi >= C:
                raise ValueError(
                    f"loss {loss.name!r} with {C} classes needs labels in [0, {C - 1}]; "
                    f"got labels from {lo} to {hi}"
                )
        return
    allowed = (0, 1) if loss.labels == BINARY01 else (-1, 1)
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
            or jnp.issubdtype(dtype, jnp.bool_)):
        raise TypeError(f"loss {loss.name!r} needs labels in {set(allowed)}; got dtype {dtype}")
    if is_concrete(y) and n:
        yn = np.asarray(y)
        bad = ~np.isin(yn, allowed)
        if bad.any():
            found = sorted(set(yn[bad].tolist()))[:5]
            hint = " (for hinge use -1/+1: y = 2 * y - 1)" if loss.labels == BINARY_PM1 else \
                " (for logistic use 0/1: y = (y + 1) // 2)"
            raise ValueError(
                f"loss {loss.name!r} needs labels in {set(allowed)}; found {found}{hint}"
            )


def first_nonfinite(a: np.ndarray) -> tuple[int, ...] | None:
    """The index of the first NaN or inf in a float array, or None; scanned in blocks, so
    a large array needs no full-size temporary."""
    flat, step = a.reshape(-1), 1 << 22
    for i in range(0, flat.size, step):
        bad = ~np.isfinite(flat[i:i + step])
        if bad.any():
            return tuple(int(w) for w in np.unravel_index(i + int(np.argmax(bad)), a.shape))
    return None


def check_finite(name: str, tree) -> None:
    """Raise if any leaf of a concrete pytree holds NaN or inf (outside jit only)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype  # no copy
        if is_concrete(leaf) and jnp.issubdtype(dtype, jnp.inexact):
            a = np.asarray(leaf)
            where = first_nonfinite(a)
            if where is not None:
                raise ValueError(
                    f"{name}{jax.tree_util.keystr(path)} holds a non-finite value "
                    f"({a[where]}) at index {where}: clean the data first"
                )


def check_features(X, what: str = "X", columns=None) -> np.ndarray:
    """``X`` as a 2-D numeric array whose every value is finite, or a ValueError naming
    the first bad row and column."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(f"{what} must be a 2-D array (examples, features); got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{what} must be numeric; got {X.dtype}")
    where = first_nonfinite(X) if X.dtype.kind == "f" else None
    if where is not None:
        r, c = where
        name = f" ({columns[c]!r})" if columns is not None else ""
        raise ValueError(f"{what} row {r}, column {c}{name} is {X[r, c]}: features must be "
                         "finite numbers")
    if X.dtype.itemsize > 4 or X.dtype.kind in "iu":  # float64, int64: beyond float32?
        for rows in row_blocks(len(X)):  # a block at a time: no full-size temporary
            big = np.abs(X[rows]) > files.F32_MAX
            if big.any():
                r, c = (int(i) for i in np.argwhere(big)[0])
                r += rows.start
                name = f" ({columns[c]!r})" if columns is not None else ""
                raise ValueError(f"{what} row {r}, column {c}{name} is {X[r, c]}: beyond "
                                 f"float32's range ({files.F32_MAX:.3g}), which the network "
                                 "computes in; rescale it")
    return X


def check_data(x, y, spec: MLPSpec) -> None:
    """``x`` and (unless None) ``y`` as the spec takes them: shapes, label range, no NaN or
    inf (the value checks outside jit only)."""
    check_x(x, spec)
    if y is not None:
        check_labels(y, spec, np.shape(x)[0])
    check_finite("x", x)
    if y is not None:
        check_finite("y", y)


def validate(params, x, y, spec: MLPSpec) -> None:
    """Every check at once, including NaN/inf in params, x and y (outside jit)."""
    check_params(params, spec)
    check_finite("params", params)
    check_data(x, y, spec)
