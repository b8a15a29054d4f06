"""Verify and inspect a built or published dataset, shard by shard."""

from __future__ import annotations

import collections
import dataclasses
import json
import os

from etils import epath

from tfds_bigarrays._format.layout import read_layout
from tfds_bigarrays._format.records import RecordError
from tfds_bigarrays._read import core
from tfds_bigarrays._registry.lookup import SHARDS_FILENAME
from tfds_bigarrays._registry.publish import sha256_of

_CHUNK_FRAMES_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardReport:
    path: str
    split: str
    examples: int
    problem: str = ""


def _splits(directory: epath.Path) -> list[tuple[str, list[int], list[epath.Path]]]:
    info = json.loads((directory / "dataset_info.json").read_text())
    out = []
    for split in info.get("splits", []):
        lengths = [int(n) for n in split.get("shardLengths", [])]
        n = len(lengths)
        files = [
            directory / f"{info['name']}-{split['name']}.tfrecord-{i:05d}-of-{n:05d}"
            for i in range(n)
        ]
        out.append((split["name"], lengths, files))
    return out


def verify(directory: epath.PathLike) -> list[ShardReport]:
    """Re-hashes (when published) and re-reads every shard; one report each."""
    directory = epath.Path(directory)
    layout = read_layout(directory)
    if layout is None:
        raise RecordError(f"{directory} is not a tfds_bigarrays dataset (no layout file).")
    codec = layout.codec()
    frame = codec.frame_bytes
    recorded = {}
    if (directory / SHARDS_FILENAME).exists():
        recorded = json.loads((directory / SHARDS_FILENAME).read_text())
    reports = []
    for split, lengths, files in _splits(directory):
        for rows, path in zip(lengths, files, strict=True):
            reports.append(_verify_shard(path, split, rows, frame, codec, recorded.get(path.name)))
    return reports


def _verify_shard(path, split, rows, frame, codec, record) -> ShardReport:
    def bad(problem: str) -> ShardReport:
        return ShardReport(path=str(path), split=split, examples=rows, problem=problem)

    if not path.exists():
        return bad("missing")
    size = path.stat().length
    if size != rows * frame:
        return bad(f"{size} bytes, expected {rows * frame} ({rows} records of {frame} bytes)")
    if record is not None:
        if record["bytes"] != size:
            return bad(f"size changed since publish ({size} != {record['bytes']})")
        digest = sha256_of(path)
        if digest != record["sha256"]:
            return bad(
                f"sha256 {digest[:12]}... differs from the published {record['sha256'][:12]}..."
            )
    # Every frame, in order, through the read core: headers, layout, CRCs.
    step = max(1, _CHUNK_FRAMES_BYTES // frame)
    count = 0
    with path.open("rb") as f:
        while block := f.read(step * frame):
            try:
                core.decode(codec, [block], [os.fspath(path)], first_rows=[count])
            except core.ShardReadError as e:
                return bad(str(e))
            count += len(block) // frame
    return ShardReport(path=str(path), split=split, examples=rows)


def describe(directory: epath.PathLike) -> str:
    """A readable table: splits, counts, sizes, feature specs, provenance."""
    directory = epath.Path(directory)
    info = json.loads((directory / "dataset_info.json").read_text())
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
        for name, spec in layout.specs.items():
            lines.append(f"| {name} | {spec.dtype.name} | {list(spec.shape)} |")
        items = info.get("supervisedKeys", {}).get("tuple", {}).get("items", [])
        if items:
            keys = ", ".join(item.get("featureKey", "?") for item in items)
            lines += ["", f"supervised keys (as_supervised=True): ({keys})"]
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
