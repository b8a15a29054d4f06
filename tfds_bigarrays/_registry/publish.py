"""`publish`: a built version copied into a team namespace, atomically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator

from etils import epath

from tfds_bigarrays._build.plan import VERSION
from tfds_bigarrays._build.scratch import OWNER_FILE, locked, owned, remove_abandoned
from tfds_bigarrays._files import version_identity
from tfds_bigarrays._registry.lookup import (
    SHARDS_FILENAME,
    Registry,
    RegistryError,
    check_name,
)


@contextlib.contextmanager
def _held(source: epath.Path, version: str) -> Iterator[None]:
    """The source version, kept from being swapped by an overwrite while it is copied.

    An overwrite swaps versions under this lock (`_build/builder.py`); where the
    lock cannot be taken (a folder this user cannot write), the version's
    identity is compared before and after the copy instead.
    """
    before = version_identity(source)
    try:
        lock = locked(source.parent / f".{version}.lock")
        lock.__enter__()
    except OSError:
        lock = None
    try:
        yield
        if version_identity(source) != before:
            raise RegistryError(
                f"{source} was rebuilt while it was being published; nothing was published. "
                "Publish it again."
            )
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def sha256_of(path: epath.Path, *, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def shard_files(dataset_dir: epath.Path) -> list[epath.Path]:
    return sorted(p for p in dataset_dir.iterdir() if ".tfrecord-" in p.name)


def publish(source_dir: epath.PathLike, *, registry: Registry, namespace: str) -> epath.Path:
    """Copies a built version into the namespace's first path, atomically.

    The copy goes to a temporary folder beside the target, with every
    shard's size and sha256 recorded in shards.json, and is renamed into
    place only when complete. Versions are immutable: an existing one is
    never replaced.
    """
    source = epath.Path(source_dir)
    info_path = source / "dataset_info.json"
    info = json.loads(info_path.read_text())
    # Both become path components under the namespace's root: a tampered
    # dataset_info.json must not steer the copy outside it.
    name = check_name(info.get("name"), what=f"name in {info_path}")
    version = info.get("version")
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise RegistryError(
            f"version in {info_path}={version!r} is not valid: it must look like '1.0.0'. "
            "Rebuild the dataset instead of editing dataset_info.json."
        )
    ns = registry.namespace(namespace)
    target = ns.paths[0] / name / version
    if target.exists():
        raise RegistryError(
            f"{namespace}:{name}:{version} is already published at {target}; versions are "
            "immutable. Build and publish a new version (version=)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target.parent)  # copies of publishes that were killed
    tmp = target.parent / f".{version}.incomplete-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        with owned(tmp), _held(source, version):
            shards = {}
            for item in source.iterdir():
                if item.is_dir() or item.name == OWNER_FILE:
                    continue
                item.copy(tmp / item.name)
                if ".tfrecord-" in item.name:
                    copied = tmp / item.name
                    shards[item.name] = {
                        "bytes": copied.stat().length,
                        "sha256": sha256_of(copied),
                    }
            (tmp / SHARDS_FILENAME).write_text(json.dumps(shards, indent=1, sort_keys=True))
            if target.exists():  # someone published the same version meanwhile
                raise RegistryError(f"{namespace}:{name}:{version} appeared while publishing.")
            (tmp / OWNER_FILE).unlink(missing_ok=True)  # the published folder holds data only
            tmp.rename(target)
    except BaseException:
        if tmp.exists():
            tmp.rmtree()
        raise
    return target
