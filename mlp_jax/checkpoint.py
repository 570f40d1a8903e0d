"""Checkpoints: save / load / resume, without pickle.

One ``.npz`` file holds every array (params, optimizer state, best params, batch
norm's running statistics, the step and the raw key data) and one JSON string (spec,
history, metadata and the names of the arrays). It is written to a temporary file in
the same directory, flushed to disk, then renamed over the old one, so a crash at any
moment leaves either the old checkpoint or the new one, never half of one. Loading uses
``allow_pickle=False`` and checks the file against the spec and the expected
structure; anything unreadable raises :class:`CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .dataset import Preprocessing
from .network import init_stats
from .outputs import replace_whole
from .spec import MLPSpec

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated, or does not fit the spec."""


class Checkpoint(NamedTuple):
    """All of a run's checkpoint (:func:`load`): the training state to continue from and
    the run's record."""
    state: object  # a train.TrainState
    spec: MLPSpec
    history: list
    best_params: tuple
    best_val_acc: float | None
    meta: dict
    preprocessing: Preprocessing | None = None  # a run on data of your own: what it fitted
    best_stats: tuple = ()  # batch norm's running statistics that go with best_params


def spec_to_dict(spec: MLPSpec) -> dict:
    d = dataclasses.asdict(spec)
    for field in ("activation", "loss"):
        if not isinstance(d[field], str):
            raise CheckpointError(
                f"a checkpoint stores the {field} by name, and {d[field]!r} is a custom "
                f"object; save params with numpy yourself, or use a built-in {field}")
    d["sizes"] = list(d["sizes"])
    return d


def spec_from_dict(d: dict) -> MLPSpec:
    return MLPSpec(**{**d, "sizes": tuple(d["sizes"])})


def _flatten(prefix: str, tree) -> dict[str, np.ndarray]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def save(path: str, state, *, spec: MLPSpec, history=(), best_params=None, best_stats=None,
         best_val_acc=None, meta=None, preprocessing: Preprocessing | None = None) -> None:
    """Write ``state`` (a ``TrainState``) and the run's record to ``path`` atomically;
    ``preprocessing``: the label values (JSON) and feature statistics (arrays) fitted on
    data of your own."""
    arrays = {**_flatten("state", state._replace(key=jax.random.key_data(state.key))),
              **_flatten("best_params", state.params if best_params is None else best_params),
              **_flatten("best_stats", state.stats if best_stats is None else best_stats)}
    info = {"format": FORMAT, "spec": spec_to_dict(spec), "history": list(history),
            "best_val_acc": best_val_acc, "meta": meta or {},
            "key_impl": str(jax.random.key_impl(state.key))}
    if preprocessing is not None:
        p = preprocessing
        info["preprocessing"] = {"classes": list(p.classes), "label_column": p.label_column,
                                 "features": None if p.features is None else list(p.features),
                                 "standardized": p.mean is not None}
        if p.mean is not None:
            arrays.update({"preprocessing.mean": np.asarray(p.mean, np.float32),
                           "preprocessing.std": np.asarray(p.std, np.float32)})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    replace_whole(path, lambda f: np.savez(f, __info__=np.array(json.dumps(info)), **arrays))


def _read(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}  # reads every member: CRCs checked
        info = json.loads(str(arrays.pop("__info__")))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                              f"{e}); delete it or resume from an older copy") from e
    if not isinstance(info, dict):
        raise CheckpointError(f"checkpoint {path} holds a record of type {type(info).__name__},"
                              " not this library's; it was not written by mlp_jax")
    if info.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {info.get('format')!r}; "
                              f"this version reads format {FORMAT}")
    return info, arrays


def _record(path: str, info: dict) -> tuple[MLPSpec, list, object, dict]:
    """The stored spec, history, best validation accuracy and meta; a record that valid
    JSON holds but this library did not write (a bad spec, a missing or extra field) is a
    CheckpointError naming what is wrong."""
    try:
        stored = spec_from_dict(info["spec"])
        history, best_val, meta = info["history"], info["best_val_acc"], info["meta"]
        if not isinstance(history, list) or not isinstance(meta, dict):
            raise TypeError("history must be a list and meta a dict")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} holds a record this library cannot read "
                              f"({type(e).__name__}: {e})") from e
    return stored, history, best_val, meta


def _preprocessing(path: str, info: dict, arrays: dict) -> Preprocessing | None:
    """The stored preprocessing (None for a run on a bundled dataset)."""
    p = info.get("preprocessing")
    if p is None:
        return None
    try:
        classes, features = p["classes"], p["features"]
        if not isinstance(classes, list) or len(classes) < 2 or \
                len({type(c) for c in classes}) != 1 or type(classes[0]) not in (int, str):
            raise TypeError("classes must be a list of two or more ints or strings")
        mean = std = None
        if p["standardized"]:
            mean, std = arrays["preprocessing.mean"], arrays["preprocessing.std"]
            if mean.shape != std.shape or mean.ndim != 1 or mean.dtype != np.float32:
                raise TypeError("mean and std must be float32 vectors of one length")
        return Preprocessing(tuple(classes), mean, std,
                             None if features is None else tuple(features), p["label_column"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} holds preprocessing this library cannot "
                              f"read ({type(e).__name__}: {e})") from e


def _check_spec(path: str, stored: MLPSpec, spec: MLPSpec | None) -> None:
    if spec is not None and stored != spec:
        diff = [f"{f.name}: checkpoint {getattr(stored, f.name)!r}, given {getattr(spec, f.name)!r}"
                for f in dataclasses.fields(MLPSpec)
                if getattr(stored, f.name) != getattr(spec, f.name)]
        raise CheckpointError(f"checkpoint {path} was made for another network: "
                              + "; ".join(diff))


def _unflatten(path: str, prefix: str, template, arrays) -> object:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for p, like in leaves:
        name = prefix + jax.tree_util.keystr(p)
        if name not in arrays:
            raise CheckpointError(f"checkpoint {path} lacks {name}: it was saved with another "
                                  "optimizer or network")
        a = arrays[name]
        want = np.asarray(like).dtype
        if a.dtype.kind == "V" and a.dtype.itemsize == want.itemsize:
            a = a.view(want)  # numpy stores ml_dtypes' bfloat16 as raw 2-byte records
        if a.shape != np.shape(like) or a.dtype != want:
            raise CheckpointError(f"checkpoint {path}: {name} is {a.dtype}{list(a.shape)}, "
                                  f"expected {want}{list(np.shape(like))}")
        out.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, out)


class Trained(NamedTuple):
    """A saved network, ready to use (:func:`load_params`): ``params`` and the batch-norm
    running ``stats`` that go with them, chosen by ``which`` (``"best"``: best on
    validation; ``"final"``: the last update's), and what the run recorded."""
    params: tuple
    stats: tuple
    which: str
    spec: MLPSpec
    preprocessing: Preprocessing | None
    history: list
    best_val_acc: float | None
    meta: dict


WHICH = ("best", "final")


class Saved:
    """A checkpoint file read once (:func:`read`): its record (``spec``, ``history``,
    ``best_val_acc``, ``meta``) at once, its arrays restored on demand."""

    def __init__(self, path: str):
        self.path = path
        self._info, self._arrays = _read(path)
        self.spec, self.history, self.best_val_acc, self.meta = _record(path, self._info)

    def restore(self, *, template, spec: MLPSpec | None = None) -> Checkpoint:
        """The full training checkpoint. ``template``: a ``TrainState`` of the same spec
        and optimizer (e.g. a fresh ``init_state``) giving the structure, shapes and
        dtypes to expect; ``spec``, if given, must equal the checkpoint's."""
        path, info, arrays = self.path, self._info, self._arrays
        _check_spec(path, self.spec, spec)
        raw_key = jax.random.key_data(template.key)
        state = _unflatten(path, "state", template._replace(key=raw_key), arrays)
        try:
            state = state._replace(key=jax.random.wrap_key_data(state.key,
                                                                impl=info["key_impl"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} holds no usable key_impl "
                                  f"({type(e).__name__}: {e})") from e
        best = _unflatten(path, "best_params", template.params, arrays)
        best_stats = _unflatten(path, "best_stats", template.stats, arrays)
        return Checkpoint(state, self.spec, self.history, best, self.best_val_acc, self.meta,
                          _preprocessing(path, info, arrays), best_stats)

    def trained(self, which: str = "best", spec: MLPSpec | None = None) -> Trained:
        """The saved network (:func:`load_params`)."""
        if which not in WHICH:
            raise ValueError(f"which must be one of {', '.join(WHICH)}; got {which!r}")
        path, stored = self.path, self.spec
        _check_spec(path, stored, spec)
        dtype = jnp.dtype(stored.dtype)
        template = tuple({k: jnp.zeros(s, dtype) for k, s in layer.items()}
                         for layer in stored.param_shapes())
        prefix = {"best": ("best_params", "best_stats"),
                  "final": ("state.params", "state.stats")}[which]
        params = _unflatten(path, prefix[0], template, self._arrays)
        stats = _unflatten(path, prefix[1], init_stats(stored), self._arrays)
        return Trained(params, stats, which, stored,
                       _preprocessing(path, self._info, self._arrays), self.history,
                       self.best_val_acc, self.meta)


def read(path: str) -> Saved:
    """Read a checkpoint file whole (every member's CRC checked); CheckpointError if it
    is missing, corrupt or not this library's."""
    return Saved(path)


def load(path: str, *, template, spec: MLPSpec | None = None) -> Checkpoint:
    """Load a full training checkpoint: ``read(path).restore(template=..., spec=...)``."""
    return read(path).restore(template=template, spec=spec)


def load_params(path: str, *, which: str = "best", spec: MLPSpec | None = None) -> Trained:
    """The network a run saved: its best-on-validation params (``which="best"``; the
    final ones where the run had no validation split) or its final params
    (``which="final"``), their running statistics, the spec, the preprocessing of a run
    on your own data, and the record; nothing of the optimizer."""
    return read(path).trained(which, spec)
