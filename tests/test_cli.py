"""The mlp-jax command line: one-line errors, train then eval."""

import argparse
import csv
import json
import os
import re
import shlex
import subprocess
import sys

import chex
import pytest
from conftest import write_cifar_batch

from mlp_jax import cli
from tests.timeouts import guard


@pytest.mark.parametrize("argv,match", [
    (["train", "--lr", "-1"], "must be a finite number > 0"),
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
    (["train", "--seed", str(2**64)], r"at most 9223372036854775807"),
    (["train", "--seed", "-3"], "must be >= 0"),
    (["sweep", "--seeds", f"0,{2**64}"], r"at most"),
    (["train", "--norm", "batchnorm", "--batch-size", "1"],
     r"a minibatch of 1 examples is a batch of 1.*\(--batch-size\)"),
    (["sweep", "--norm", "batchnorm", "--batch-size", "1"], r"batch of 1, whose variance"),
])
def test_cli_bad_arguments_one_line_exit_2(argv, match, capsys, tmp_path):
    if argv[0] in ("train", "sweep"):
        argv = argv + ["--out", str(tmp_path / "o")]
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    err = err.strip()
    assert code == 2
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert re.search(match, err), err
    assert not (tmp_path / "o").exists()  # nothing written
    assert out == ""  # nor a description of a run that does not start


@pytest.mark.parametrize("bad,match", [
    ("dir", r"data_batch_3 is not a file: expected a CIFAR-10 python batch$"),
    ("few", r"the training batches hold 30 images and the test batch 4; need more than 1000"),
    ("label", r"data_batch_3: CIFAR-10 labels are 0..9; found 0..10$"),
])
def test_cli_bad_cifar_directory_one_line_exit_2(bad, match, tmp_path, capsys):
    n = 6 if bad == "few" else 201
    for i in range(1, 6):
        path = tmp_path / f"data_batch_{i}"
        if bad == "dir" and i == 3:
            path.mkdir()
        else:
            write_cifar_batch(path, n, i, labels=[10] + [0] * (n - 1)
                              if bad == "label" and i == 3 else None)
    write_cifar_batch(tmp_path / "test_batch", 4, 9)
    code = cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re.search(match, err), err
    assert not (tmp_path / "o").exists()


def test_the_command_list_imports_no_jax():
    """`mlp-jax --help` lists the subcommands without building their options (train's
    choices come from modules that import jax, about a second): no jax module is loaded.
    A subcommand's own --help still shows its every option (the next test)."""
    code = ("import sys\nfrom mlp_jax import cli\ntry:\n    cli.main(['--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jax'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=guard(120)).stdout
    assert "gradcheck" in out and "predict" in out  # the list, with every subcommand
    assert out.strip().splitlines()[-1] == "[]"


def test_cli_help_shows_every_default():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
                continue
            assert f"(default: {action.default})" in text, (name, action.dest)


DIGITS = ["train", "--epochs", "2", "--batch-size", "256", "--hidden", "16", "--quiet"]


@pytest.mark.parametrize("epochs,lr,last_best", [("3", "1e-3", True), ("6", "3", False)])
def test_cli_evaluates_the_best_params_once_where_they_are_the_final(epochs, lr, last_best,
                                                                     tmp_path, monkeypatch):
    """Where the last epoch is the best on validation the final params' figures serve for
    both; where an earlier one was (lr 3 diverges after a good start), the best params are
    evaluated themselves: their val accuracy is the best epoch's."""
    from mlp_jax import train

    calls, evaluate = [], train.evaluate_splits
    monkeypatch.setattr(train, "evaluate_splits",
                        lambda *a, **k: calls.append(1) or evaluate(*a, **k))
    out = tmp_path / "r"
    argv = DIGITS[:1] + ["--epochs", epochs, "--lr", lr, "--schedule", "constant",
                         "--eval-every", "1", "--hidden", "16", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    last_is_best = all(rows[-1]["val_acc"] > r["val_acc"] for r in rows[:-1])  # ties: the first
    assert last_is_best == last_best and len(rows) == int(epochs)
    assert len(calls) == len(rows) + (1 if last_is_best else 2)  # fit's per epoch, then ours
    assert summary["best_val_params_val_acc"] == pytest.approx(max(r["val_acc"] for r in rows))
    assert summary["val_acc"] == pytest.approx(rows[-1]["val_acc"])


def test_cli_quiet_overwrite_init_from_and_one_training_accuracy(tmp_path, capsys):
    """--quiet still prints the final accuracies; the epoch lines' training accuracy is the
    summary's (all examples: digits has 1,149, more than the 1,000 it once sampled); a
    second run into the same --out needs --overwrite, which starts afresh; --init-from
    starts a new run from a run's final params, with new options."""
    from mlp_jax.checkpoint import load_params

    out = tmp_path / "a"
    assert cli.main(DIGITS + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "final params: train_acc" in printed and "best-on-validation params" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert rows[-1]["train_acc"] == summary["train_acc"] < 1.0

    assert cli.main(DIGITS + ["--out", str(out)]) == 2
    assert "--overwrite to start it again" in capsys.readouterr().err
    assert cli.main(DIGITS + ["--out", str(out), "--overwrite", "--seed", "1"]) == 0
    again = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(again) == len(rows) and again != rows  # the new run's history only
    assert cli.main(DIGITS + ["--out", str(out), "--overwrite", "--resume"]) == 2

    # a new run from those params: SGD at a rate too small to move float32 params
    new = DIGITS[:-1] + ["--init-from", str(out), "--out", str(tmp_path / "b"),
                         "--optimizer", "sgd", "--lr", "1e-30", "--schedule", "constant"]
    assert cli.main(new) == 0
    before = load_params(str(out / "checkpoint.npz"), which="final").params
    after = load_params(str(tmp_path / "b" / "checkpoint.npz"), which="final").params
    chex.assert_trees_all_equal(before, after)
    capsys.readouterr()
    assert cli.main(new[:-6] + ["--hidden", "8", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "its params have shapes" in err, err
    assert not (tmp_path / "c").exists()


def test_cli_out_that_cannot_be_a_run_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cases = [(tmp_path / "file", "a file of that name exists"),
             (tmp_path / "file" / "sub", r"cannot create it \(Not a directory\)"),
             ("/proc/mlp-jax-run", r"cannot create it \((No such file|Permission)")]
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        cases.append((tmp_path / "ro", "not writable"))
    for out, match in cases:
        for argv in (["train", "--dataset", "spiral", "--epochs", "1"],
                     SWEEP[:3] + ["--epochs", "1"]):
            assert cli.main(argv + ["--out", str(out)]) == 2, out
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and re.search(match, err), err


def test_cli_disk_full_or_read_only_mid_run_keeps_the_last_checkpoint(tmp_path, capsys,
                                                                     monkeypatch):
    """The disk filling up during the second save (epoch 2), and a run directory that
    turns read-only (metrics.jsonl): one line, exit 1, the last checkpoint whole and no
    temporary file left. (Simulated: this machine's tests run as root, which writes
    anywhere, and filling a real disk is not a test.)"""
    import errno

    import numpy as np

    from mlp_jax import checkpoint

    argv = ["train", "--dataset", "spiral", "--epochs", "3", "--eval-every", "1",
            "--hidden", "8", "--quiet", "--out", str(tmp_path / "r")]
    saves, savez = [], np.savez

    def full_disk(f, **arrays):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        savez(f, **arrays)

    monkeypatch.setattr(checkpoint.np, "savez", full_disk)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err, err
    assert sorted(os.listdir(tmp_path / "r")) == [".lock", "checkpoint.npz", "metrics.jsonl"]
    assert checkpoint.load_params(str(tmp_path / "r" / "checkpoint.npz")).history[-1][
        "epoch"] == 1
    monkeypatch.undo()

    real_open = open

    def read_only(path, mode="r", *a, **k):
        if str(path).endswith("metrics.jsonl") and mode != "r":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", read_only)
    assert cli.main(argv + ["--resume"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"mlp-jax: error: cannot write {tmp_path / 'r' / 'metrics.jsonl'}: "
                   "Permission denied; what was saved before is intact (free space or fix "
                   "permissions, then --resume)"), err


def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "spiral", "--epochs", "20", "--batch-size", "300",
                     "--optimizer", "sgd", "--lr", "1.0", "--out", str(out), "--quiet",
                     "--dropout", "0", "--input-noise", "0", "--hidden", "100"])
    assert code == 0
    assert {"checkpoint.npz", "metrics.jsonl", "curves.png", "summary.json"} <= \
        set(os.listdir(out))
    assert cli.main(["eval", "--checkpoint", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mlp-jax: error: the checkpoint's network takes 2 features but digits has "
                   "64: evaluate it on the dataset it was trained on"), err
    assert cli.main(["train", "--dataset", "spiral", "--out", str(out)]) == 2  # exists


SWEEP = ["sweep", "--dataset", "spiral", "--epochs", "8", "--batch-size", "60", "--hidden", "16",
         "--optimizer", "sgd", "--lr", "0.1,0.5", "--dropout", "0,0.3", "--input-noise", "0",
         "--seeds", "0,1", "--chunk", "1", "--quiet"]


def _rows(path):
    return json.loads((path / "sweep.json").read_text())


def test_cli_sweep_writes_table_plot_and_a_command_that_reruns_the_best(tmp_path):
    """Seeds x lr x dropout (with and without: two programs), each configuration's results
    in the CSV and JSON; the best row's `mlp-jax train` command, run, gives the same final
    accuracy and (to float32 rounding) loss, and so does another row's."""
    out = tmp_path / "sw"
    assert cli.main(SWEEP + ["--out", str(out)]) == 0
    assert {"options.json", "results.jsonl", "sweep.csv", "sweep.json", "sweep.png"} <= \
        set(os.listdir(out))
    table = _rows(out)
    rows = table["rows"]
    assert len(rows) == 8 and table["metric"] == "train_acc"  # spiral has no validation split
    assert {(r["seed"], r["lr"], r["dropout"]) for r in rows} == {
        (s, lr, p) for s in (0, 1) for lr in (0.1, 0.5) for p in (0.0, 0.3)}
    assert [r["train_acc"] for r in rows] == sorted((r["train_acc"] for r in rows), reverse=True)
    with open(out / "sweep.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["train_acc"]) for r in csv_rows] == [r["train_acc"] for r in rows]
    assert table["best"] == rows[0]
    assert len({r["train_loss"] for r in rows}) == 8  # every configuration really differs
    for i, row in ((0, rows[0]), (5, rows[5])):
        argv = shlex.split(cli.sweep._train_command(cli.build_parser().parse_args(
            SWEEP + ["--out", str(out)]), row))
        if i == 0:
            assert argv == shlex.split(table["best_command"])
        argv[argv.index("--out") + 1] = str(tmp_path / f"rerun{i}")
        assert argv[:2] == ["mlp-jax", "train"]
        assert cli.main(argv[1:] + ["--quiet"]) == 0
        summary = json.loads((tmp_path / f"rerun{i}" / "summary.json").read_text())
        assert summary["train_acc"] == row["train_acc"], (row, summary)
        assert summary["train_loss"] == pytest.approx(row["train_loss"], rel=1e-5)


def test_cli_sweep_resumes_what_a_crash_left(tmp_path, capsys):
    """A sweep cut off after three configurations (the last line half-written) finishes
    with --resume, running only what is missing, to the table of an uninterrupted sweep;
    without --resume, or with other options, it refuses in one line."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert cli.main(SWEEP + ["--out", str(whole)]) == 0
    assert cli.main(SWEEP + ["--out", str(cut)]) == 0
    lines = (cut / "results.jsonl").read_text().splitlines(keepends=True)
    (cut / "results.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    (cut / "sweep.json").unlink()
    capsys.readouterr()
    assert cli.main(SWEEP + ["--out", str(cut)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert cli.main([*SWEEP, "--out", str(cut), "--resume", "--epochs", "9"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: the sweep in" in err and "--epochs 8" in err, err
    assert cli.main(SWEEP[:-1] + ["--out", str(cut), "--resume"]) == 0
    assert "8 configurations (3 already done)" in capsys.readouterr().out
    assert len((cut / "results.jsonl").read_text().splitlines()) == 8
    assert _rows(cut)["rows"] == _rows(whole)["rows"]


def test_cli_random_sweep_draws_within_the_lists_ranges(tmp_path):
    out = tmp_path / "rnd"
    assert cli.main(SWEEP + ["--random", "3", "--reg", "1e-4,1e-2", "--out", str(out)]) == 0
    rows = _rows(out)["rows"]
    assert len(rows) == 6  # 3 points x 2 seeds
    points = {(r["lr"], r["reg"], r["dropout"]) for r in rows}
    assert len(points) == 3
    for lr, reg, p in points:
        assert 0.1 <= lr <= 0.5 and 1e-4 <= reg <= 1e-2 and 0 <= p <= 0.3
        assert float(f"{lr:.3g}") == lr  # printed as it was used


@pytest.mark.parametrize("extra,match", [
    (["--lr", "0.1,x"], "comma-separated learning rates"),
    (["--reg", "-1"], "must be >= 0"),
    (["--dropout", "0,1.5"], r"drop probability in \[0, 1\)"),
    (["--devices", "64"], "--devices 64: asked for 64 devices"),
    (["--schedule", "step", "--lr-decay", "3"], "step_decay's decay"),
])
def test_cli_sweep_bad_options_one_line_exit_2(extra, match, tmp_path, capsys):
    try:
        code = cli.main(SWEEP + extra + ["--out", str(tmp_path / "bad")])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re.search(match, err), err
    assert not (tmp_path / "bad").exists()  # nothing written


def test_cli_resume_reads_the_checkpoint_and_checks_batches_once(tmp_path, monkeypatch):
    """The --resume path: one read of checkpoint.npz and one batch check (on main: two
    reads, and the batch rules checked by the command line and again by fit)."""
    from mlp_jax import batches, checkpoint

    base = ["train", "--dataset", "spiral", "--epochs", "2", "--batch-size", "100",
            "--hidden", "8", "--norm", "batchnorm", "--quiet", "--out", str(tmp_path / "r")]
    assert cli.main(base) == 0
    calls = {"read": 0, "check": 0}

    def counted(name, fn):
        def wrapper(*a, **kw):
            calls[name] += 1
            return fn(*a, **kw)
        return wrapper

    monkeypatch.setattr(checkpoint, "_read", counted("read", checkpoint._read))
    monkeypatch.setattr(batches, "check", counted("check", batches.check))
    assert cli.main(base[:4] + ["4"] + base[5:] + ["--resume"]) == 2  # refused: --epochs
    assert calls == {"read": 1, "check": 0}
    calls.update(read=0)
    assert cli.main(base + ["--resume", "--eval-every", "1"]) == 0
    assert calls == {"read": 1, "check": 1}


def test_cli_resume_refuses_other_options_and_damaged_checkpoints(tmp_path, capsys):
    """A resumed run continues only with the options its updates depend on (optimizer,
    lr, batch size, epochs: the schedule spans them, ...); a damaged checkpoint is one line.
    Each refusal: exit 2, one line naming the option and its recorded value."""
    base = ["train", "--dataset", "spiral", "--epochs", "2", "--batch-size", "100",
            "--hidden", "8", "--quiet", "--out", str(tmp_path / "r")]
    assert cli.main(base) == 0
    capsys.readouterr()
    for extra, said in ((["--optimizer", "sgd"], "--optimizer adam"),
                        (["--lr", "0.01"], "--lr 0.001"),
                        (["--batch-size", "50"], "--batch-size 100"),
                        (["--epochs", "4"], "--epochs 2"),
                        (["--seed", "1", "--reg", "0"], "--seed 0, --reg 0.001")):
        argv = base + ["--resume"] + extra
        assert cli.main(argv) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot resume: the run in" in err, err
        assert said in err, err
    assert cli.main(base + ["--resume", "--eval-every", "3"]) == 0  # changes no update
    (tmp_path / "r" / "checkpoint.npz").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert cli.main(base + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mlp-jax: error: cannot resume:"), err


def _typed_options(command: str) -> list[str]:
    """Every option of ``command`` that takes a number (or numbers), from the parser
    itself: an option added later is enumerated too."""
    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return [a.option_strings[0] for a in sub.choices[command]._actions
            if a.option_strings and a.type is not None and a.option_strings[0] != "--shapes"]


@pytest.mark.parametrize("command", ["train", "sweep", "gradcheck"])
def test_every_numeric_option_refuses_nonsense_in_one_line(command, tmp_path, capsys):
    """Every numeric option, each value no option can mean (negative, NaN, infinite,
    beyond float64, not a number): one line, exit status 2, nothing written. Found this
    way: --lr-decay took nan and inf, --warmup took -1, sweep's --lr took 0."""
    base = {"train": ["train", "--dataset", "spiral", "--epochs", "1", "--quiet"],
            "sweep": ["sweep", "--dataset", "spiral", "--epochs", "1", "--quiet"],
            "gradcheck": ["gradcheck", "--random", "1", "--quiet"]}[command]
    options = _typed_options(command)
    assert len(options) >= {"train": 15, "sweep": 15, "gradcheck": 5}[command]
    for option in options:
        for value in ("-1", "nan", "inf", "1e400", "abc"):
            out = tmp_path / f"{option}{value}"
            argv = base + [option, value] + (["--out", str(out)] if command != "gradcheck"
                                             else [])
            try:
                code = cli.main(argv)
            except SystemExit as e:
                code = e.code
            err = capsys.readouterr().err.strip()
            assert code == 2, (option, value, code, err[-500:])
            assert len(err.splitlines()) == 1 and "Traceback" not in err, (option, value, err)
            assert not out.exists(), (option, value)


@pytest.mark.slow
def test_an_exploding_loss_stops_training_and_is_never_the_best_of_a_sweep(tmp_path, capsys):
    """Adam at lr 1e9 keeps a finite loss (1e18-1e20) and, on digits, a *higher*
    validation accuracy than lr 1e-3 after 5 epochs: main exited 0 and ranked it first.
    Now: train stops (exit 1, one line); the sweep ranks it last, says how many
    diverged, and recommends the sane one; a sweep where all diverge exits 1."""
    base = ["--dataset", "digits", "--hidden", "32", "--quiet"]
    assert cli.main(["train", *base, "--lr", "1e9", "--epochs", "3",
                     "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "loss rose to" in err, err
    assert cli.main(["sweep", *base, "--lr", "1e-3,1e9", "--epochs", "5",
                     "--out", str(tmp_path / "s")]) == 0
    table = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert table["diverged"] == 1 and table["best"]["lr"] == 1e-3
    assert [r["diverged"] for r in table["rows"]] == [False, True]
    assert "--lr 0.001" in table["best_command"]
    assert cli.main(["sweep", *base, "--lr", "1e8,1e9", "--epochs", "3",
                     "--out", str(tmp_path / "all")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("every configuration diverged (results in "
                        f"{tmp_path / 'all'}): lower the learning rates"), err
    table = json.loads((tmp_path / "all" / "sweep.json").read_text())
    assert table["diverged"] == 2 and table["best"] is None and table["best_command"] is None


def test_a_cache_directory_it_cannot_write_is_a_warning(tmp_path, monkeypatch, capsys):
    """The compilation cache where a file stands in the path (unwritable even for root):
    one warning line, the run trains as without a cache."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MLP_JAX_COMPILE_CACHE", str(tmp_path / "file" / "xla"))
    assert cli.main(["train", "--dataset", "spiral", "--epochs", "1", "--hidden", "8",
                     "--quiet", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlp-jax: warning: no compilation cache: cannot write to ") and \
        len(err.splitlines()) == 1, err
    assert (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.calibration
@pytest.mark.slow
def test_a_second_run_of_the_same_shapes_compiles_nothing(tmp_path):
    """With the compilation cache (on by default; here in a directory of the test's own),
    the first run writes its compiled programs and a second run of the same shapes
    writes none: each was loaded, none compiled. MLP_JAX_COMPILE_CACHE=0 keeps nothing."""
    cache = tmp_path / "xla"

    def run(out, setting):
        proc = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "train", "--dataset",
                               "spiral", "--epochs", "3", "--hidden", "16", "--quiet",
                               "--out", str(tmp_path / out)], capture_output=True, text=True,
                              env=dict(os.environ, MLP_JAX_COMPILE_CACHE=setting),
                              timeout=guard(300))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return set(os.listdir(cache)) if cache.exists() else set()

    first = run("a", str(cache))
    assert any("epochs" in name for name in first), first  # the training program is kept
    assert run("b", str(cache)) == first
    assert run("c", "0") == first  # off: nothing read, nothing written


def test_profile_says_where_the_seconds_went(tmp_path, monkeypatch, capsys):
    """train --profile: after the result, on stderr, each phase's seconds (from the
    process's start), their total, and what compiling took inside them; without it,
    nothing of the kind."""
    monkeypatch.setenv("MLP_JAX_COMPILE_CACHE", "0")
    argv = ["train", "--dataset", "spiral", "--epochs", "2", "--hidden", "8", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "where the time went" not in capsys.readouterr().err
    argv[argv.index("8")] = "9"  # new shapes: programs this process has not compiled yet
    assert cli.main([*argv, "--profile", "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("final params:")  # the result first
    lines = err.splitlines()
    assert lines[0] == "where the time went (--profile):", err
    rows = {line[:60].strip(): float(line[60:].rstrip(" s")) for line in lines[1:7]}
    assert list(rows)[0].startswith("start-up") and list(rows)[-1] == "total", rows
    assert all(v >= 0 for v in rows.values())
    assert rows["total"] == pytest.approx(sum(list(rows.values())[:-1]), abs=0.03)
    programs = int(re.search(r"\((\d+) programs\)", err).group(1))
    assert programs > 0  # new shapes, the cache off: compiled here


@pytest.mark.calibration
@pytest.mark.slow
def test_the_compilation_cache_never_serves_another_versions_program(tmp_path):
    """The persistent cache is keyed by what was compiled and by what compiled it: a run
    under another jaxlib version, or with the library's code changed (one layer computing
    otherwise, as an upgrade would), compiles and keeps programs of its own instead of
    loading the cached ones; each run again loads its own (writes nothing)."""
    cache = tmp_path / "xla"

    def run(out, patch=""):
        code = f"{patch}\nimport sys\nfrom mlp_jax.cli import main\nsys.exit(main(sys.argv[1:]))"
        proc = subprocess.run([sys.executable, "-c", code, "train", "--dataset", "spiral",
                               "--epochs", "3", "--hidden", "16", "--quiet",
                               "--out", str(tmp_path / out)], capture_output=True, text=True,
                              env=dict(os.environ, MLP_JAX_COMPILE_CACHE=str(cache)),
                              timeout=guard(300))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return set(os.listdir(cache))

    other_jaxlib = "import jax._src.cache_key as k; k.jaxlib_version_str = '0.0.0+another'"
    changed_code = ("import mlp_jax.layers as layers; affine = layers.affine; "
                    "layers.affine = lambda x, W, b: 2.0 * affine(x, W, b)")
    first = run("a")
    assert run("b") == first  # the same versions and code: loaded
    upgraded = run("c", other_jaxlib)
    assert upgraded > first  # its own programs, beside the others
    assert run("d", other_jaxlib) == upgraded
    changed = run("e", changed_code)
    assert changed > upgraded
    assert run("f", changed_code) == changed
