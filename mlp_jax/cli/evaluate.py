"""``mlp-jax eval`` and ``mlp-jax predict``: a saved run on its dataset, or on a file of
your own read as its training file was."""

from __future__ import annotations

import os
import sys

from .common import UsageError, binary_labels, load_data, load_run, writable, write_text
from .options import Help


def _own_file(path: str, ck, labels: str):
    """A file of your own, read as the checkpoint's run read its training file: the same
    label column, feature columns and preprocessing. Returns ``(X, y or None)``,
    transformed and encoded."""
    from .. import files
    from ..data import check_features

    prep = ck.preprocessing
    if prep is None:
        raise UsageError(f"--data {path}: the checkpoint's run trained on a bundled dataset "
                         f"({ck.meta.get('config', {}).get('dataset')}), so it stored no "
                         "preprocessing to apply to a file; use a run trained with --data")
    try:
        arrays = files.read(path, label_column=prep.label_column, labels=labels,
                            features=prep.features)
        X = check_features(arrays["X"], f"{path}: X")
        if X.shape[1] != ck.spec.sizes[0]:
            raise ValueError(f"{path} has {X.shape[1]} features; the checkpoint's network "
                             f"takes {ck.spec.sizes[0]}")
        y = arrays.get("y")
        return X, None if y is None else prep.encode(y, f"{path}: labels")
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e


def _eval(args) -> int:
    from ..data import Dataset
    from ..evaluation import evaluate_splits, splits_of
    from ..losses import CLASS

    path, ck = load_run(args.checkpoint, args.params)
    config = ck.meta.get("config", {})
    if args.data:
        X, y = _own_file(args.data, ck, labels="required")
        ds = Dataset(os.path.basename(args.data), X[:0], y[:0], None, None,
                     ck.preprocessing.transform(X, copy=False), y,
                     len(ck.preprocessing.classes), ck.preprocessing)
        splits = ("test",)
    else:
        if not (args.dataset or config.get("data") or config.get("dataset")):
            raise UsageError("the checkpoint does not say its dataset: pass --dataset or --data")
        ds = load_data({**config, "data_dir": args.data_dir or config.get("data_dir")},
                        args.dataset)
        splits = ("train", "val", "test")
    name = ds.name
    ds = binary_labels(ds, ck.spec)
    D, C = ck.spec.sizes[0], ck.spec.sizes[-1]
    if not args.data and ds.X_train.shape[1] != D:  # a file's columns: checked in _own_file
        raise UsageError(f"the checkpoint's network takes {D} features but {name} has "
                         f"{ds.X_train.shape[1]}: evaluate it on the dataset it was trained on")
    if ck.spec.loss_fn.labels == CLASS and ds.num_classes != C:
        raise UsageError(f"the checkpoint's network has {C} classes but {name} has "
                         f"{ds.num_classes}: evaluate it on the dataset it was trained on")
    summary = evaluate_splits(ck.params, ck.spec, splits_of(ds, splits), stats=ck.stats)
    what = f"{name}: {len(ds.X_test)} examples" if args.data else ds.describe()
    print(f"{path} ({ck.which} params): {what}, network {ck.spec.sizes} "
          f"{ck.spec.activation_name}")
    print(" ".join(f"{k.removeprefix('test_') if args.data else k} {v:.4f}"
                   for k, v in summary.items()))
    return 0


def _predict(args) -> int:
    import csv
    import io

    import numpy as np

    from .. import inference

    writable(args.out)
    path, ck = load_run(args.checkpoint, args.params)
    X, y = _own_file(args.data, ck, labels="optional")
    try:
        p = inference.predict(ck.params, X, ck.spec, ck.preprocessing, stats=ck.stats)
    except ValueError as e:
        raise UsageError(f"--data {args.data}: {e}") from e
    classes = ck.preprocessing.classes
    if p.probabilities is not None:
        header, values = [f"p_{c}" for c in classes], p.probabilities
    elif ck.spec.sizes[-1] > 1:
        header, values = [f"score_{c}" for c in classes], p.scores
    else:
        header, values = ["score"], p.scores
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(([] if p.labels is None else ["label"]) + header)
    for i, row in enumerate(values.tolist()):
        w.writerow(([] if p.labels is None else [p.labels[i]]) + row)
    if args.out:
        write_text(args.out, text.getvalue())
    else:
        sys.stdout.write(text.getvalue())
    if y is not None and p.labels is not None:
        acc = float(np.mean(p.labels == ck.preprocessing.decode(y)))
        print(f"{len(X)} predictions; accuracy against the file's labels {acc:.4f}"
              + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    elif args.out:
        print(f"{len(X)} predictions; wrote {args.out}", file=sys.stderr)
    return 0




def add_parser(sub, full) -> None:
    which = dict(choices=("best", "final"), default="best",
                 help="the run's best-on-validation params or its final ones")
    e = sub.add_parser("eval", help="evaluate a checkpoint's best params on its dataset",
                       formatter_class=Help)
    if full("eval"):
        _eval_options(e, which)
    r = sub.add_parser("predict", help="predict labels for a file of your own with a run "
                       "trained on your own data", formatter_class=Help,
                       description="One CSV row per example: the predicted label (in your "
                       "own label values) and the class probabilities (softmax loss), or "
                       "the scores (other losses). A label column in the file, if any, is "
                       "compared with the predictions.")
    if full("predict"):
        _predict_options(r, which)


def _eval_options(e, which: dict) -> None:
    from ..data import DATASETS

    e.add_argument("--checkpoint", required=True, help="a run directory or checkpoint.npz")
    e.add_argument("--params", **which)
    e.add_argument("--dataset", choices=sorted(DATASETS), help="default: the checkpoint's")
    e.add_argument("--data-dir", help="where cifar10's python batches are (default: the "
                   "checkpoint's)")
    e.add_argument("--data", metavar="FILE",
                   help="a labelled .npz or .csv to evaluate on, read and preprocessed as the "
                        "run's training file was (a run trained with --data)")
    e.set_defaults(func=_eval)


def _predict_options(r, which: dict) -> None:
    r.add_argument("--checkpoint", required=True, help="a run directory or checkpoint.npz")
    r.add_argument("--params", **which)
    r.add_argument("--data", required=True, metavar="FILE",
                   help="a .npz (array X) or .csv (the training file's feature columns)")
    r.add_argument("--out", metavar="FILE", help="write the CSV here (default: stdout)")
    r.set_defaults(func=_predict)
