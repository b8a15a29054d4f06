"""Scratch folders of builds and publishes: marked while in use, removed when abandoned.

A build writes into TFDS's `incomplete.*` folder, a rebuild (`--overwrite`)
into a `.rebuild-*` folder beside the version it replaces, a publish into a
`.VERSION.incomplete-*` folder beside its target. Each is marked with a lock
that the kernel releases when its process dies, however it dies; later
builds and publishes remove the folders whose lock they can take, never a
live one's. A finished rebuild swaps its folder with the old version in one
step (`exchange`), so that readers always find one complete version.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import uuid
from collections.abc import Iterator

from etils import epath

# Folders of builds, rebuilds and publishes in a dataset's (or namespace's)
# folder, and of removals in progress.
SCRATCH_PATTERNS = ("incomplete.*", ".rebuild-*", ".*.incomplete-*", ".removing-*")
# A version moved aside by a swap without RENAME_EXCHANGE (see `exchange`).
_ASIDE = ".replaced-"

OWNER_FILE = ".tfds_bigarrays_owner"


@contextlib.contextmanager
def owned(directory: epath.Path) -> Iterator[None]:
    """Marks `directory` as being written by this process while it runs.

    An exclusive `flock` on a marker file, held open: the kernel releases it
    when the process dies, however it dies, so `remove_abandoned` tells a
    dead build's folder from a live one without trusting pids or clocks.
    Folders where that is impossible (object stores) are not marked, and so
    never removed by another build.
    """
    marker = os.fspath(directory / OWNER_FILE)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_WRONLY, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, socket.gethostname().encode())
    except OSError:
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(marker)
            os.close(fd)


def remove_abandoned(name_dir: epath.Path) -> None:
    """Removes scratch folders (`SCRATCH_PATTERNS`) whose writing process has died.

    A folder is abandoned when its marker (see `owned`) was written on this
    host and its lock can be taken; it is renamed before deletion, so two
    builds cleaning up at once never delete each other's work.
    """
    _restore_aside(name_dir)
    folders = {f for pattern in SCRATCH_PATTERNS for f in name_dir.glob(pattern) if f.is_dir()}
    for folder in sorted(folders):
        marker = folder / OWNER_FILE
        try:
            if marker.read_text() != socket.gethostname():
                continue  # another host's build (or no marker): not ours to judge
            fd = os.open(os.fspath(marker), os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # locked: its build is alive
        try:
            claimed = name_dir / f".removing-{uuid.uuid4().hex}"
            folder.rename(claimed)
        except OSError:
            continue  # someone else claimed it first
        finally:
            os.close(fd)
        claimed.rmtree(missing_ok=True)


@contextlib.contextmanager
def scratch_dir(name_dir: epath.Path) -> Iterator[epath.Path]:
    """A marked `incomplete.*` folder in the dataset's folder, for spooling.

    Spooled generator rows and downloads stay on the file system the user
    chose for the dataset (not /tmp), and a build killed while spooling
    leaves a folder that the next build removes.
    """
    created = []  # folders this creates, innermost first; removed again if empty
    for folder in [name_dir, *name_dir.parents]:
        if folder.exists():
            break
        created.append(folder)
    if not created:
        remove_abandoned(name_dir)
    path = name_dir / f"incomplete.spool_{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    try:
        with owned(path):
            yield path
    finally:
        path.rmtree(missing_ok=True)
        for folder in created:
            with contextlib.suppress(OSError, ValueError):  # not empty: in use
                folder.rmdir()


def remove_empty_tree(path: epath.Path) -> None:
    """Removes `path` if it holds nothing but empty folders."""
    for child in path.iterdir():
        if child.is_dir():
            remove_empty_tree(child)
    if not any(path.iterdir()):
        path.rmdir()


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: epath.Path, b: epath.Path) -> None:
    """Swaps folders `a` and `b`, in one step where the file system can.

    Linux's `renameat2(RENAME_EXCHANGE)` swaps two paths atomically: a reader
    opening `b` finds either all of the old folder or all of the new one.
    Where it is not available (other systems, some file systems, object
    stores), two renames leave `b` missing for a moment.
    """
    if "://" not in os.fspath(a):
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is not None:
            if (
                renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
                == 0
            ):
                return
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                raise OSError(err, os.strerror(err), os.fspath(b))
    aside = b.parent / f"{_ASIDE}{b.name}-{uuid.uuid4().hex[:12]}"
    b.rename(aside)
    try:
        a.rename(b)
    except BaseException:
        aside.rename(b)
        raise
    aside.rename(a)


@contextlib.contextmanager
def locked(path: epath.Path) -> Iterator[None]:
    """An exclusive lock on the file `path` (created if needed) while in the block."""
    fd = os.open(os.fspath(path), os.O_CREAT | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _restore_aside(name_dir: epath.Path) -> None:
    """Finishes a swap without RENAME_EXCHANGE that died between its renames:
    the old version goes back if nothing took its place, else it goes."""
    for aside in name_dir.glob(f"{_ASIDE}*"):
        version = aside.name[len(_ASIDE) :].rsplit("-", 1)[0]
        target = name_dir / version
        with locked(name_dir / f".{version}.lock"):  # the lock `exchange`'s callers hold
            if not aside.exists():
                continue
            if target.exists():
                aside.rmtree()
            else:
                aside.rename(target)


def sync_tree(path: epath.Path, *, files: bool = True) -> None:
    """fsync every file under `path` (with `files`) and every folder, so that a
    rename that follows never points at data still in the page cache."""
    if "://" in os.fspath(path):
        return  # object stores: a write is durable when it returns
    for root, _, names in os.walk(os.fspath(path)) if files else [(os.fspath(path), [], [])]:
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
