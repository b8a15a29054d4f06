"""Verify and inspect a built or published dataset, shard by shard."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Any

import google_crc32c
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import read_only_builder

from tfds_bigarrays._format.layout import LAYOUT_FILENAME, Layout, read_layout
from tfds_bigarrays._read import core
from tfds_bigarrays._read.features import check_layout_with_builder
from tfds_bigarrays._registry.lookup import SHARDS_FILENAME, RegistryError

_CHUNK_FRAMES_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardReport:
    path: str
    split: str
    examples: int
    problem: str = ""


def _info(directory: epath.Path) -> dict:
    path = directory / "dataset_info.json"
    try:
        info = json.loads(path.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        for split in info.get("splits", []):
            [int(n) for n in split.get("shardLengths", [])]
            str(split["name"])
        str(info["name"])
    except FileNotFoundError:
        raise RegistryError(
            f"{directory} holds no dataset_info.json: it is not a built dataset."
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise RegistryError(
            f"{path} is damaged ({type(e).__name__}: {e}). Rebuild the dataset, or restore the file."
        ) from None
    return info


def checked_layout(directory: epath.Path) -> tuple[Layout, dict, tfds.core.DatasetBuilder]:
    """The layout file, cross-checked with features.json and dataset_info.json;
    with dataset_info.json's content and TFDS's reading of the folder."""
    layout = read_layout(directory)
    if layout is None:
        raise RegistryError(f"{directory} is not a tfds_bigarrays dataset (no {LAYOUT_FILENAME}).")
    info = _info(directory)
    try:
        builder = read_only_builder.builder_from_directory(directory)
        builder.info.features  # noqa: B018 - parsed now, to name a damaged file
    except Exception as e:  # TFDS raises many types for a damaged folder; all mean the same here
        raise RegistryError(
            f"{directory}: features.json or dataset_info.json cannot be read by TFDS ({e}). "
            "Rebuild the dataset, or restore the files."
        ) from None
    check_layout_with_builder(layout, builder)
    return layout, info, builder


def verify(directory: epath.PathLike, *, quick: bool = False) -> list[ShardReport]:
    """Checks every shard; one report each.

    Every shard's size, its CRC32C as a whole against the one the build
    recorded (catching records moved, swapped or replaced, and shards from
    another dataset), and, when published, its sha256. Unless `quick`, every
    record is also read back through the read core (frame headers, layout,
    each record's CRC32C).
    """
    directory = epath.Path(directory)
    layout, _, builder = checked_layout(directory)
    codec = layout.codec()
    recorded = {}
    if (directory / SHARDS_FILENAME).exists():
        try:
            recorded = json.loads((directory / SHARDS_FILENAME).read_text())
        except ValueError as e:
            raise RegistryError(f"{directory / SHARDS_FILENAME} is damaged ({e}).") from None
    receipts = {
        r.get("file"): r
        for split in (layout.provenance.get("shards") or {}).values()
        for r in split
        if isinstance(r, dict)
    }
    reports = []
    for split in builder.info.splits.values():
        for rows, path in zip(split.shard_lengths, split.filepaths, strict=True):
            path = directory / path.name  # a published copy: the files beside its metadata
            reports.append(
                _verify_shard(
                    path,
                    split.name,
                    rows,
                    codec,
                    recorded.get(path.name),
                    receipts.get(path.name),
                    quick,
                )
            )
    return reports


def _verify_shard(path, split, rows, codec, published, receipt, quick) -> ShardReport:
    def bad(problem: str) -> ShardReport:
        return ShardReport(path=str(path), split=split, examples=rows, problem=problem)

    frame = codec.frame_bytes
    if not path.exists():
        return bad("missing")
    size = path.stat().length
    if size != rows * frame:
        return bad(f"{size} bytes, expected {rows * frame} ({rows} records of {frame} bytes)")
    if published is not None and published["bytes"] != size:
        return bad(f"size changed since publish ({size} != {published['bytes']})")
    digest = hashlib.sha256() if published is not None else None
    crc, count, broken = 0, 0, ""
    step = max(1, _CHUNK_FRAMES_BYTES // frame)
    with path.open("rb") as f:
        while block := f.read(step * frame):
            crc = google_crc32c.extend(crc, block)
            if digest is not None:
                digest.update(block)
            if not quick and not broken:
                # Every frame, in order, through the read core: headers, layout, CRCs.
                try:
                    core.decode(codec, [block], [os.fspath(path)], first_rows=[count])
                except core.ShardReadError as e:
                    broken = str(e)
            count += len(block) // frame
    # The publish record first (the strongest), then the records, then the build's CRC.
    if digest is not None and digest.hexdigest() != published["sha256"]:
        return bad(
            f"sha256 {digest.hexdigest()[:12]}... differs from the published "
            f"{published['sha256'][:12]}..."
        )
    if broken:
        return bad(broken)
    if receipt is not None and "crc32c" in receipt and crc != receipt["crc32c"]:
        return bad(
            f"its content differs from what the build wrote (CRC32C {crc:08x}, recorded "
            f"{int(receipt['crc32c']):08x}): records were moved, swapped or replaced"
        )
    return ShardReport(path=str(path), split=split, examples=rows)


def describe(directory: epath.PathLike) -> str:
    """A readable table: splits, counts, sizes, feature specs, provenance."""
    directory = epath.Path(directory)
    info = _info(directory)
    layout = read_layout(directory)
    lines = [f"{info['name']} {info['version']}  ({directory})", ""]
    lines += ["| split | examples | shards | MB |", "|---|---:|---:|---:|"]
    for split in info.get("splits", []):
        lengths = [int(n) for n in split.get("shardLengths", [])]
        lines.append(
            f"| {split['name']} | {sum(lengths)} | {len(lengths)} | "
            f"{int(split.get('numBytes', 0)) / 1e6:.1f} |"
        )
    lines += ["", "| feature | dtype | shape |", "|---|---|---|"]
    if layout is not None:
        labels = _class_labels(directory)
        for name, spec in layout.specs.items():
            dtype = f"ClassLabel({labels[name]}), int64" if name in labels else spec.dtype.name
            lines.append(f"| {name} | {dtype} | {list(spec.shape)} |")
        keys = info.get("supervisedKeys")
        if keys:
            lines += ["", f"supervised keys (as_supervised=True): {_nest_text(keys)}"]
        lines += ["", "provenance:"]
        lines += [f"  {k}: {v}" for k, v in layout.provenance.items() if k != "shards"]
        for split, receipts in layout.provenance.get("shards", {}).items():
            workers = collections.Counter(r.get("worker", "?") for r in receipts)
            written = ", ".join(f"{w} ({n})" for w, n in sorted(workers.items()))
            lines.append(f"  {split} shards written by: {written}")
        if layout.permute_seed is not None:
            lines.append(f"  stored order: permuted (seed {layout.permute_seed})")
    published = (directory / SHARDS_FILENAME).exists()
    lines.append(f"  shard sha256 recorded: {'yes' if published else 'no (not published)'}")
    return "\n".join(lines)


def _nest_text(node: dict[str, Any]) -> str:
    """A SupervisedKeys proto (as dataset_info.json stores it) as Python writes the nest."""
    if "featureKey" in node:
        return str(node["featureKey"])
    if "tuple" in node:
        items = [_nest_text(i) for i in node["tuple"].get("items", [])]
        return f"({', '.join(items)}{',' if len(items) == 1 else ''})"
    if "dict" in node:
        pairs = node["dict"].get("dict", {})
        return "{" + ", ".join(f"{k}: {_nest_text(v)}" for k, v in pairs.items()) + "}"
    return "?"


def _class_labels(directory: epath.Path) -> dict[str, str]:
    """Feature -> number of classes, for the ClassLabels in features.json."""
    try:
        features = json.loads((directory / "features.json").read_text())
        entries = features["featuresDict"]["features"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {
        name: str(f["classLabel"].get("numClasses", "?"))
        for name, f in entries.items()
        if isinstance(f, dict) and isinstance(f.get("classLabel"), dict)
    }
