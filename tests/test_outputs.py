"""Every file the library writes is replaced whole, and only a regular file (or a new
name) is replaced: a symlink, a directory or a device is refused in one line, and no
temporary file is left. On main, `predict --out /dev/null` (as root) replaced the device
with a regular file, a symlink was replaced by a file, and `--out DIR` left `DIR.tmp`."""

import os
import stat

import numpy as np
import pytest

from mlp_jax import cli
from mlp_jax.outputs import OutputError, replace_whole, write_text


def _tmp_left(directory) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".tmp")]


def test_a_file_is_replaced_whole_and_a_new_one_created(tmp_path):
    path = tmp_path / "out.csv"
    write_text(str(path), "new\n")
    assert path.read_text() == "new\n"
    path.write_text("old\n")
    write_text(str(path), "newer\n")
    assert path.read_text() == "newer\n" and not _tmp_left(tmp_path)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old\n")

    def half(f):
        f.write(b"half of it")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        replace_whole(str(path), half)
    assert path.read_text() == "old\n" and not _tmp_left(tmp_path)


def test_the_next_write_removes_what_a_killed_write_left(tmp_path):
    (tmp_path / ".out.csv-abc123.tmp").write_text("a write killed outright")
    (tmp_path / ".other.csv-abc123.tmp").write_text("another file's: not ours")
    write_text(str(tmp_path / "out.csv"), "x")
    assert _tmp_left(tmp_path) == [".other.csv-abc123.tmp"]


@pytest.mark.parametrize("kind", ["symlink", "directory", "device", "fifo", "missing parent"])
def test_only_a_regular_file_or_a_new_name_is_replaced(tmp_path, kind):
    target = tmp_path / "target.csv"
    target.write_text("the link's target\n")
    path = {"symlink": tmp_path / "link.csv", "directory": tmp_path / "d",
            "device": "/dev/null", "fifo": tmp_path / "pipe",
            "missing parent": tmp_path / "no" / "p.csv"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "symlink":
        os.symlink(target, path)
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(OutputError) as e:
        write_text(str(path), "x")
    assert "\n" not in str(e.value)
    assert {"symlink": "is a symbolic link", "directory": "is a directory",
            "device": "is a character device, not a file; name a regular file; omit --out",
            "fifo": "is a pipe, not a file",
            "missing parent": "/no does not exist"}[kind] in str(e.value)
    assert target.read_text() == "the link's target\n"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert os.path.islink(tmp_path / "link.csv") == (kind == "symlink")
    assert kind != "fifo" or stat.S_ISFIFO(os.lstat(path).st_mode)  # still a pipe
    assert not _tmp_left(tmp_path)


def test_cli_outputs_refuse_what_they_must_not_replace_before_any_work(tmp_path, capsys):
    """predict --out and gradcheck --json: one line, exit 2, nothing replaced or left."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, 0] > 0).astype(int))
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "2",
                     "--hidden", "4", "--quiet", "--out", str(run)]) == 0
    os.symlink(tmp_path / "d.npz", tmp_path / "link.csv")
    (tmp_path / "dir").mkdir()
    for argv in (["predict", "--checkpoint", str(run), "--data", str(tmp_path / "d.npz"),
                  "--out"], ["gradcheck", "--random", "1", "--quiet", "--json"]):
        for bad in ("/dev/null", str(tmp_path / "link.csv"), str(tmp_path / "dir")):
            capsys.readouterr()
            assert cli.main(argv + [bad]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "not a file" in err, err
    assert os.path.islink(tmp_path / "link.csv") and (tmp_path / "dir").is_dir()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not _tmp_left(tmp_path) and not list(tmp_path.glob("dir*.tmp"))
    assert cli.main(["predict", "--checkpoint", str(run), "--data", str(tmp_path / "d.npz"),
                     "--out", str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 61
