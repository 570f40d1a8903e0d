"""Every file the library writes: whole, and only over what may be replaced.

A file is written aside (a temporary file beside it), flushed to disk and renamed over
the target, so a reader sees the old file or the new one and a crash never leaves half
of one; an interrupt arriving meanwhile waits for it (:func:`lifetime.whole_write`);
the temporary file of a write killed outright is removed by the next write of that
file. The target must be a regular file or a new name: a directory, a symbolic link, a
device, a pipe or a socket is refused in one line (renaming over them would replace the
link or the device node itself, not write to it).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable

from .lifetime import whole_write

KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"))


class OutputError(ValueError):
    """A path that cannot be written as a whole file: the message says why."""


def check_target(path: str) -> None:
    """``path`` is a regular file or a new name in an existing directory, else
    :class:`OutputError`."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise OutputError(f"{path}: the directory {parent} does not exist") from None
        return
    for test, what in KINDS:
        if test(mode):
            hint = "; omit --out to write to stdout" if test is stat.S_ISCHR else ""
            raise OutputError(f"{path} is {what}, not a file; name a regular file{hint}")


def replace_whole(path: str, write: Callable) -> None:
    """``write(f)`` into a binary file that then replaces ``path`` whole (see the module
    docstring); ``path`` checked first by :func:`check_target`."""
    check_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}-"
    with whole_write():
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself on disk
            finally:
                os.close(dir_fd)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        for name in os.listdir(directory):  # what a write killed outright left
            if name.startswith(prefix) and name.endswith(".tmp"):
                os.unlink(os.path.join(directory, name))


def write_text(path: str, text: str) -> None:
    """:func:`replace_whole` with ``text`` (UTF-8)."""
    replace_whole(path, lambda f: f.write(text.encode()))
