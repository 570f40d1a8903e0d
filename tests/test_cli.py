"""The mlp-jax command line: one-line errors, train then eval."""

import os

import pytest

from mlp_jax import cli


@pytest.mark.parametrize("argv,match", [
    (["train", "--lr", "-1"], "must be > 0"),
    (["train", "--hidden", "abc"], "comma-separated widths"),
    (["train", "--activation", "relux"], "invalid choice"),
    (["train", "--dataset", "cifar10"], "needs --data-dir"),
    (["train", "--loss", "logistic"], "binary but digits has 10 classes"),
    (["train", "--dropout", "1.5"], r"drop probability in \[0, 1\)"),
    (["train", "--schedule", "step", "--lr-decay", "1.5"],
     r"step_decay's decay must be finite and in \(0, 1\]; got 1.5 \(from --lr, --lr-decay"),
    (["train", "--schedule", "exponential", "--lr-decay", "2"], r"exponential.s rate must be"),
    (["eval", "--checkpoint", "/nonexistent"], "no checkpoint"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_bad_arguments_one_line_exit_2(argv, match, capsys, tmp_path):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "o")]
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert __import__("re").search(match, err), err


def test_cli_train_then_eval(tmp_path):
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "spiral", "--epochs", "20", "--batch-size", "300",
                     "--optimizer", "sgd", "--lr", "1.0", "--out", str(out), "--quiet",
                     "--dropout", "0", "--input-noise", "0", "--hidden", "100"])
    assert code == 0
    assert {"checkpoint.npz", "metrics.jsonl", "curves.png", "summary.json"} <= \
        set(os.listdir(out))
    assert cli.main(["eval", "--checkpoint", str(out)]) == 0
    assert cli.main(["train", "--dataset", "spiral", "--out", str(out)]) == 2  # exists
