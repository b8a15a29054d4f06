"""`publish`: a built version copied into a team namespace, atomically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator

import tqdm
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


def _copy_hashed(
    source: epath.Path, target: epath.Path, bar: tqdm.tqdm, *, chunk: int = 8 << 20
) -> str:
    """Copies `source` to `target`; returns the sha256 of the bytes written."""
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        while block := src.read(chunk):
            dst.write(block)
            digest.update(block)
            bar.update(len(block))
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
            items = [i for i in source.iterdir() if not i.is_dir() and i.name != OWNER_FILE]
            shards = {}
            with tqdm.tqdm(
                total=sum(i.stat().length for i in items if ".tfrecord-" in i.name),
                desc=f"Publishing {namespace}:{name}:{version}",
                unit="B",
                unit_scale=True,
                leave=False,
            ) as bar:
                for item in items:
                    if ".tfrecord-" not in item.name:
                        item.copy(tmp / item.name)
                        continue
                    sha256 = _copy_hashed(item, tmp / item.name, bar)
                    shards[item.name] = {
                        "bytes": (tmp / item.name).stat().length,
                        "sha256": sha256,
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
