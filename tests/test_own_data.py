"""Data of your own: .npz and .csv files through `mlp-jax train`, `predict` and `eval`,
and `data.from_arrays` / `mj.predict` in the API, against numpy references; bad files
give one line and exit status 2 with nothing written."""

import csv
import json
import os
import re

import jax
import numpy as np
import pytest

import mlp_jax as mj
from mlp_jax import cli, data, files
from mlp_jax.checkpoint import load_params

LABELS = np.array(["cat", "dog", "emu"])


def _problem(n, seed):
    """Three classes of 4 features on different scales (so standardization matters)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1.0, 10.0, 0.1, 5.0] + [0.0, 50.0, -3.0, 1.0]
    k = (X[:, 0] > 0).astype(int) + (X[:, 1] > 55)
    return X.astype(np.float32), k


def _write_csv(path, X, y=None, names=("a", "b", "c", "d"), label="kind"):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(names) + ([label] if y is not None else []))
        for i, row in enumerate(X.tolist()):
            w.writerow([repr(v) for v in row] + ([y[i]] if y is not None else []))


def _reference(ck, X_train, X_new):
    """What the run must predict, from numpy alone: the training split's statistics
    (float64, std 1 where constant), the network's scores in numpy, argmax, sorted labels."""
    mean = X_train.astype(np.float64).mean(0)
    std = X_train.astype(np.float64).std(0)
    Z = ((X_new - mean.astype(np.float32)) / np.where(std > 0, std, 1).astype(np.float32))
    h = np.asarray(Z, np.float64)
    params = [{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in ck.params]
    for layer in params[:-1]:
        h = np.maximum(h @ layer["W"].T + layer["b"], 0)
    scores = h @ params[-1]["W"].T + params[-1]["b"]
    return Z, scores


def _read_predictions(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_train_on_csv_with_string_labels_then_predict_and_eval(tmp_path, capsys):
    X, k = _problem(400, 0)
    _write_csv(tmp_path / "train.csv", X[:300], LABELS[k[:300]])
    _write_csv(tmp_path / "new.csv", X[300:])  # features only
    _write_csv(tmp_path / "labelled.csv", X[300:], LABELS[k[300:]])
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "train.csv"), "--val-fraction", "0",
                     "--epochs", "30", "--hidden", "16", "--lr", "1e-2", "--quiet",
                     "--out", str(run)]) == 0
    ck = load_params(str(run / "checkpoint.npz"))
    assert ck.preprocessing.classes == ("cat", "dog", "emu")  # sorted, as the user wrote them
    assert ck.preprocessing.features == ("a", "b", "c", "d")
    assert ck.preprocessing.label_column == "kind"
    np.testing.assert_allclose(ck.preprocessing.mean, X[:300].astype(np.float64).mean(0),
                               rtol=1e-6)
    assert cli.main(["predict", "--checkpoint", str(run), "--data", str(tmp_path / "new.csv"),
                     "--out", str(tmp_path / "p.csv")]) == 0
    header, rows = _read_predictions(tmp_path / "p.csv")
    assert header == ["label", "p_cat", "p_dog", "p_emu"] and len(rows) == 100
    Z, scores = _reference(ck, X[:300], X[300:])
    assert [r[0] for r in rows] == list(LABELS[scores.argmax(1)])
    # and the library's own label rule on the same params and standardized array
    mine = mj.losses.predicted_labels(mj.forward(ck.params, Z, ck.spec), ck.spec.loss_fn.labels)
    assert [r[0] for r in rows] == list(LABELS[np.asarray(mine)])
    probs = np.array([[float(v) for v in r[1:]] for r in rows])
    e = np.exp(scores - scores.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), atol=1e-5)
    capsys.readouterr()

    assert cli.main(["eval", "--checkpoint", str(run), "--data",
                     str(tmp_path / "labelled.csv")]) == 0
    acc = float(re.search(r"acc ([\d.]+)", capsys.readouterr().out).group(1))
    assert acc == pytest.approx(np.mean(LABELS[scores.argmax(1)] == LABELS[k[300:]]), abs=1e-4)
    assert acc > 0.6  # learned something (the majority class is 0.5)


def test_train_on_npz_with_its_own_splits_and_integer_labels(tmp_path):
    """Labels 3, 7, 42 map to classes 0, 1, 2 and back; X_val/X_test are used as given."""
    X, k = _problem(500, 1)
    y = np.array([3, 7, 42])[k]
    np.savez(tmp_path / "d.npz", X=X[:300], y=y[:300], X_val=X[300:400], y_val=y[300:400],
             X_test=X[400:], y_test=y[400:])
    np.savez(tmp_path / "new.npz", X=X[400:])
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "20",
                     "--hidden", "16", "--quiet", "--out", str(run)]) == 0
    summary = (run / "summary.json").read_text()
    assert '"test_acc"' in summary and '"val_acc"' in summary
    ck = load_params(str(run / "checkpoint.npz"))
    assert ck.preprocessing.classes == (3, 7, 42)
    assert cli.main(["predict", "--checkpoint", str(run), "--data", str(tmp_path / "new.npz"),
                     "--out", str(tmp_path / "p.csv")]) == 0
    header, rows = _read_predictions(tmp_path / "p.csv")
    _, scores = _reference(ck, X[:300], X[400:])
    assert [int(r[0]) for r in rows] == list(np.array([3, 7, 42])[scores.argmax(1)])


def test_from_arrays_and_predict_in_the_api():
    """from_arrays: the label mapping round-trips, the statistics are the training split's,
    the caller's arrays are untouched; mj.predict applies the same preprocessing."""
    X, k = _problem(300, 2)
    X_before = X.copy()
    ds = data.from_arrays(X, LABELS[k], val_fraction=0.2, seed=3)
    assert (X == X_before).all()
    assert len(ds.X_val) == 60 and len(ds.X_train) == 240
    prep = ds.preprocessing
    assert list(prep.decode(ds.y_train)) == list(LABELS[ds.y_train])
    assert list(prep.decode(prep.encode(LABELS[k]))) == list(LABELS[k])
    np.testing.assert_allclose(ds.X_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.X_train.std(0), 1, atol=1e-5)
    spec = mj.MLPSpec((4, 8, 3))
    params = mj.init_params(jax.random.key(0), spec)
    p = mj.predict(params, X, spec, prep)
    scores = np.asarray(mj.forward(params, prep.transform(X), spec))
    assert list(p.labels) == list(LABELS[scores.argmax(1)])
    np.testing.assert_allclose(p.scores, scores, rtol=1e-6)
    none = data.from_arrays(X, k, preprocess="none", val_fraction=0)
    assert none.preprocessing.mean is None and (none.X_train == X).all()
    assert none.preprocessing.classes == (0, 1, 2)


def _file(name, write):
    """A maker of the path ``name`` under a test's directory, written by ``write(path)``."""
    def make(tmp_path):
        path = tmp_path / name
        write(path)
        return str(path)
    return make


def _text(name, text):
    return _file(name, lambda p: p.write_text(text))


def _bytes(name, raw):
    return _file(name, lambda p: p.write_bytes(raw))


def _npz(name, **arrays):
    return _file(name, lambda p: np.savez(p, **arrays))


X0, K0 = _problem(40, 4)
BAD_FILES = [
    ("missing", lambda t: str(t / "nothing.npz"), r"no such file: .*nothing.npz$"),
    ("empty", _text("e.csv", ""), r"e.csv is empty$"),
    ("header only", _text("h.csv", "a,b,kind\n"), "has a header row and no examples"),
    ("not a zip", _bytes("z.npz", b"garbage" * 10), r"z.npz is not a readable .npz file"),
    ("a directory", _file("d.csv", lambda p: p.mkdir()), r"d.csv is not a file$"),
    ("other suffix", _text("x.txt", "1"), r"x.txt: expected a .npz or .csv file$"),
    ("wrong names", _npz("w.npz", x=X0, labels=K0),
     r"w.npz holds arrays x, labels; expected X and y \(optionally X_val"),
    ("lengths", _npz("l.npz", X=X0, y=K0[:-1]), r"X has 40 examples but its labels 39"),
    ("non-numeric", _text("n.csv", "a,b,kind\n1,2,x\n3,oops,y\n"),
     r"n.csv line 3, column 'b': 'oops' is not a number$"),
    ("NaN", _npz("nan.npz", X=np.where(np.arange(160).reshape(40, 4) == 29, np.nan, X0), y=K0),
     r"X row 7, column 1 is nan: features must be finite numbers$"),
    ("inf in csv", _text("i.csv", "a,b,kind\n1,2,x\n3,inf,y\n"),
     r"i.csv line 3, column 'b': inf is not a finite number; features must be finite"),
    ("an empty cell after a blank line", _text("gap.csv", "a,b,kind\n\n1,2,x\n3,,y\n"),
     r"gap.csv line 4, column 'b': '' is not a number \(an empty cell: fill in or drop"),
    ("Latin-1 text", _bytes("l1.csv", "a,b,kind\n1,2,x\n3,4,gr\xf6n\n".encode("latin-1")),
     r"l1.csv line 3, character 7: byte 0xf6 is not UTF-8 text \(Latin-1 or "
     r"Windows-1252\?\); save the file as UTF-8"),
    ("decimal commas", _text("dc.csv", "a;b;kind\n1,5;2;x\n3;4;y\n"),
     r"dc.csv line 2, column 'a': '1,5' is not a number \(a decimal comma\? write numbers "
     r"with a point\)$"),
    ("one column", _text("one.csv", "ab|kind\n1|x\n"),
     r"one.csv has no feature columns besides the labels \(one column, 'ab\|kind': columns "
     r"are separated by commas, semicolons or tabs\)$"),
    ("one class", _npz("o.npz", X=X0, y=np.zeros(40)),
     r"y has a single class \(0\): a classifier needs at least two$"),
    ("no label column", _text("c.csv", "a,b\n1,2\n"),
     None),  # handled below: --label-column names a column the file lacks
    ("ragged", _text("r.csv", "a,b,kind\n1,2,x\n3,y\n"),
     r"r.csv line 3 has 2 fields; the header has 3$"),
    # ambiguous files (each would otherwise train silently on the wrong thing)
    ("a feature named as the label", _text("dup.csv", "kind,b,kind\n1,2,x\n3,4,y\n"),
     r"dup.csv: columns 1 and 3 are both named 'kind'; column names must be unique$"),
    ("a regression target",
     _npz("reg.npz", X=np.zeros((442, 2), np.float32), y=np.arange(442) % 200 + 25),
     r"y has 200 distinct labels among 442 examples \(a regression target\?\)"),
    ("a pandas index column", _text("ix.csv", ",a,kind\n0,1.5,x\n1,2.5,y\n"),
     r"ix.csv: column 1 has no name \(a pandas index\? write the file with index=False"),
    ("beyond float32", _text("big.csv", "a,b,kind\n1,2,x\n3,1e300,y\n"),
     r"big.csv line 3, column 'b': 1e300 is beyond float32's range \(3.4e\+38\)"),
    ("beyond float32 in npz",
     _npz("big.npz", X=np.where(np.arange(160).reshape(40, 4) == 9, 1e300,
                                X0.astype(np.float64)), y=K0),
     r"X row 2, column 1 is 1e\+300: beyond float32's range"),
    ("pickle", _npz("p.npz", X=np.array([{"a": 1}] * 3, dtype=object), y=np.arange(3)),
     r"p.npz: X holds Python objects \(save plain numeric arrays: no object arrays, no "
     r"pickle\)$"),
]


@pytest.mark.parametrize("case,make,match", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_training_file_one_line_exit_2_nothing_written(case, make, match, tmp_path,
                                                           capsys):
    path = make(tmp_path)
    argv = ["train", "--data", path, "--epochs", "1", "--out", str(tmp_path / "run")]
    if match is None:
        argv += ["--label-column", "kind"]
        match = r"c.csv has no column 'kind' for the labels \(columns: a, b\); name it"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mlp-jax: error: "), err
    assert re.search(match, err), err
    assert not (tmp_path / "run").exists()


def test_many_classes_when_asked(tmp_path, capsys):
    """The regression-target refusal gives way to --many-classes; a sweep's rerun command
    carries the flag."""
    X = np.random.default_rng(0).normal(size=(442, 2)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", X=X, y=np.arange(442) % 200)
    ds = data.from_arrays(X, np.arange(442) % 200, many_classes=True)
    assert ds.num_classes == 200
    assert cli.main(["sweep", "--data", str(tmp_path / "reg.npz"), "--many-classes",
                     "--epochs", "1", "--hidden", "4", "--lr", "1e-3", "--quiet",
                     "--out", str(tmp_path / "s")]) == 0
    with open(tmp_path / "s" / "sweep.json") as f:
        assert " --many-classes " in json.load(f)["best_command"]


def test_bad_prediction_and_evaluation_files_one_line_exit_2(tmp_path, capsys):
    X, k = _problem(200, 5)
    _write_csv(tmp_path / "train.csv", X, LABELS[k])
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "train.csv"), "--epochs", "2",
                     "--hidden", "8", "--quiet", "--out", str(run)]) == 0
    _write_csv(tmp_path / "unseen.csv", X[:3], np.array(["cat", "fox", "dog"]))
    np.savez(tmp_path / "wide.npz", X=np.zeros((3, 5), np.float32))
    _write_csv(tmp_path / "renamed.csv", X[:3], names=("a", "b", "c", "e"))
    digits = tmp_path / "digits"
    assert cli.main(["train", "--epochs", "1", "--hidden", "8", "--quiet",
                     "--out", str(digits)]) == 0
    capsys.readouterr()
    cases = [
        (["eval", "--data", str(tmp_path / "unseen.csv")],
         r"unseen.csv: labels holds labels never seen in training: 'fox' \(row 1 first\); "
         r"training had 3 labels \('cat', 'dog', 'emu'\)$"),
        (["predict", "--data", str(tmp_path / "unseen.csv")], "never seen in training: 'fox'"),
        (["predict", "--data", str(tmp_path / "wide.npz")],
         r"wide.npz has 5 features; the checkpoint's network takes 4$"),
        (["predict", "--data", str(tmp_path / "renamed.csv")],
         r"renamed.csv has feature columns a, b, c, e; the run was trained on a, b, c, d$"),
        (["predict", "--data", str(tmp_path / "nothing.csv")], r"no such file"),
    ]
    for argv, match in cases:
        assert cli.main(argv[:1] + ["--checkpoint", str(run)] + argv[1:]
                        + ["--out", str(tmp_path / "p.csv")] * (argv[0] == "predict")) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(match, err), (argv, err)
        assert not (tmp_path / "p.csv").exists()
    assert cli.main(["predict", "--checkpoint", str(digits), "--data",
                     str(tmp_path / "train.csv")]) == 2
    assert "trained on a bundled dataset (digits)" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "p.csv")


def test_files_that_mean_what_they_say_work(tmp_path, capsys):
    """A UTF-8 byte-order mark is not part of the first column's name (a BOM file and a
    BOM-free one are the same columns); a run trained on labels '0', '1', 'three'
    evaluates a file whose labels are all whole numbers; boolean labels are classes 0
    and 1."""
    X, k = _problem(120, 3)
    names = np.array(["0", "1", "three"])
    body = "".join(f"{','.join(repr(v) for v in row)},{names[c]}\n" for row, c in
                   zip(X.tolist(), k))
    (tmp_path / "bom.csv").write_text("\ufeffdiagnosis,b,c,d,kind\n" + body, encoding="utf-8")
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "bom.csv"), "--epochs", "2",
                     "--hidden", "8", "--quiet", "--out", str(run)]) == 0
    ck = load_params(str(run / "checkpoint.npz"))
    assert ck.preprocessing.features == ("diagnosis", "b", "c", "d")
    assert ck.preprocessing.classes == ("0", "1", "three")
    ints = k < 2  # only the rows labelled '0' or '1': a file of whole numbers
    _write_csv(tmp_path / "ints.csv", X[ints], k[ints], names=("diagnosis", "b", "c", "d"))
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(run), "--data", str(tmp_path / "ints.csv")]) == 0
    assert "acc" in capsys.readouterr().out
    flags = data.from_arrays(X, k == 1, val_fraction=0)
    assert flags.preprocessing.classes == (0, 1) and set(flags.y_train.tolist()) == {0, 1}


SPELLINGS = {  # the same table, as spreadsheets and editors write it
    "utf16.csv": lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-16"),
    "semicolons.csv": lambda rows: "\n".join(";".join(r) for r in rows).encode(),
    "tabs.csv": lambda rows: "\r\n".join("\t".join(r) for r in rows).encode(),
    "trailing.csv": lambda rows: "".join(",".join(r) + ",\n" for r in rows).encode(),
    "blank_lines.csv": lambda rows: ("\n\n".join(",".join(r) for r in rows) + "\n  \n").encode(),
}


@pytest.mark.parametrize("name", SPELLINGS)
def test_a_table_reads_the_same_however_it_is_spelled(name, tmp_path):
    """UTF-16 with its mark, semicolons, tabs and CRLF, a delimiter ending every line, blank
    and whitespace-only lines: each reads as the plain comma file does."""
    rows = [["a", "b", "kind"], ["1.5", "-2", "cat"], ["3", "4e-3", "dog"], ["0", "1", "cat"]]
    path = tmp_path / name
    path.write_bytes(SPELLINGS[name](rows))
    got = files.read(str(path))
    np.testing.assert_array_equal(got["X"], np.array([[1.5, -2], [3, 4e-3], [0, 1]], np.float32))
    assert list(got["y"]) == ["cat", "dog", "cat"] and got["features"] == ("a", "b")
