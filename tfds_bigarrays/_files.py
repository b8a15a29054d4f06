"""Paths as users write them, and what identifies a file's content: one
definition each, for sources, shards, data directories and the CLI.

A file rewritten by rename is a new file (another inode); one truncated or
rewritten in place changes its size or modification time. The read core
(`_read/core.cc`) compares the same four numbers.
"""

from __future__ import annotations

import os

Identity = tuple[int, int, int, int]  # device, inode, size, mtime in ns


def user_path(value: str | os.PathLike) -> str:
    """A path as the user meant it: `~` expanded (shells leave `--flag=~/x` as is)."""
    return os.path.expanduser(os.fspath(value))


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def same_file(a: Identity, b: Identity, *, same_host: bool = True) -> bool:
    """Whether `a` and `b` name the same content; across hosts the device is
    not comparable (an NFS client numbers its devices itself)."""
    return a == b if same_host else a[1:] == b[1:]


def version_identity(folder: os.PathLike | str) -> tuple[int, int] | None:
    """What tells one built version folder from another at the same path (an
    overwrite swaps in another folder, with another dataset_info.json)."""
    try:
        info = os.path.join(os.fspath(folder), "dataset_info.json")
        return (os.stat(folder).st_ino, os.stat(info).st_mtime_ns)
    except OSError:
        return None
