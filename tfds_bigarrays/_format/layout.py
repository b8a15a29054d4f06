"""The layout file: what a reader needs to know about our records.

Written beside `dataset_info.json` as `tfds_bigarrays.json`. Its presence is
how the read path recognises a dataset of ours; stock TFDS ignores it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from etils import epath

from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._format.records import RecordCodec
from tfds_bigarrays._format.spec import FeatureSpec

LAYOUT_FILENAME = "tfds_bigarrays.json"
FORMAT = "tfds_bigarrays/example-records/1"


class LayoutError(TfdsBigarraysError, ValueError):
    """The layout file is missing a field or from an unknown format."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    """How the records of a built dataset are laid out.

    Attributes:
      specs: feature name -> spec, as written.
      record_bytes: length of every serialized Example (they are all equal).
      memory_budget: default bound, in bytes, of the reader's buffers.
      permute_seed: if not None, rows were written in the pseudo-random order
        `Permutation(n=split size, seed=permute_seed)`, not in array order.
      provenance: who built it, when, from what (informational).
    """

    specs: Mapping[str, FeatureSpec]
    record_bytes: int
    memory_budget: int
    permute_seed: int | None = None
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    format: str = FORMAT

    def codec(self) -> RecordCodec:
        codec = RecordCodec(self.specs)
        if codec.record_bytes != self.record_bytes:
            raise LayoutError(
                f"Layout says records are {self.record_bytes} bytes but its "
                f"features encode to {codec.record_bytes}: the file is corrupt."
            )
        return codec

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "features": {n: s.to_json() for n, s in sorted(self.specs.items())},
            "record_bytes": self.record_bytes,
            "memory_budget": self.memory_budget,
            "permute_seed": self.permute_seed,
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Layout:
        if value.get("format") != FORMAT:
            raise LayoutError(
                f"Unknown layout format {value.get('format')!r} (this version of "
                f"tfds_bigarrays reads {FORMAT!r}). Upgrade tfds_bigarrays."
            )
        try:
            return cls(
                specs={n: FeatureSpec.from_json(s) for n, s in value["features"].items()},
                record_bytes=int(value["record_bytes"]),
                memory_budget=int(value["memory_budget"]),
                permute_seed=value.get("permute_seed"),
                provenance=value.get("provenance", {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LayoutError(f"Malformed {LAYOUT_FILENAME}: {e}") from e


def write_layout(directory: epath.PathLike, layout: Layout) -> None:
    path = epath.Path(directory) / LAYOUT_FILENAME
    path.write_text(json.dumps(layout.to_json(), indent=2, sort_keys=True))


def read_layout(directory: epath.PathLike) -> Layout | None:
    """The layout of the dataset in `directory`, or None if it is not ours."""
    path = epath.Path(directory) / LAYOUT_FILENAME
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LayoutError(
            f"{path} is not valid JSON ({e}): the file is damaged. Rebuild the dataset, or "
            "restore the file."
        ) from None
    if not isinstance(value, dict):
        raise LayoutError(f"{path} does not hold a JSON object: the file is damaged.")
    try:
        return Layout.from_json(value)
    except LayoutError as e:
        raise LayoutError(f"{path}: {e}") from None


def check_against_info(
    layout: Layout,
    *,
    directory: epath.PathLike,
    features: Mapping[str, FeatureSpec],
    splits: Mapping[str, tuple[list[int], int]],
) -> None:
    """Refuses a layout that disagrees with the dataset's TFDS metadata.

    The reader trusts neither file alone: an edited `tfds_bigarrays.json`
    (another dtype of the same width) or `dataset_info.json` (shard lengths
    that hide a truncated shard) would give wrong rows without an error.

    Args:
      layout: the layout file's content.
      directory: the dataset's folder, for messages.
      features: the specs that features.json declares.
      splits: split -> (shard lengths, bytes), as dataset_info.json records them.

    Raises:
      LayoutError: naming both files and what they disagree on.
    """
    here = f"in {directory}"
    ours = {n: s for n, s in layout.specs.items()}
    if ours != dict(features):
        diff = sorted(
            f"{n}: {ours.get(n, 'absent')} vs {features.get(n, 'absent')}"
            for n in set(ours) | set(features)
            if ours.get(n) != features.get(n)
        )
        raise LayoutError(
            f"{LAYOUT_FILENAME} and features.json disagree on the features ({'; '.join(diff)}) "
            f"{here}: one of them was edited. Rebuild the dataset, or restore both files."
        )
    receipts = layout.provenance.get("shards")
    if not isinstance(receipts, Mapping):
        return  # built before shard receipts were recorded: nothing to compare
    frame = layout.codec().frame_bytes
    for split, (lengths, num_bytes) in splits.items():
        recorded = receipts.get(split) or []
        ours_lengths: list[int] | None
        ours_bytes: list[int] | None
        try:
            ours_lengths = [int(r["num_examples"]) for r in recorded]
            ours_bytes = [int(r["num_bytes"]) for r in recorded]
        except (KeyError, TypeError, ValueError):
            ours_lengths, ours_bytes = None, None
        if ours_lengths != list(lengths):
            raise LayoutError(
                f"{LAYOUT_FILENAME} and dataset_info.json disagree on the shards of split "
                f"{split!r} {here} (lengths {ours_lengths} vs {list(lengths)}): one of them "
                "was edited. Rebuild the dataset, or restore both files."
            )
        if ours_bytes != [n * frame for n in lengths] or sum(ours_bytes) != num_bytes:
            raise LayoutError(
                f"{LAYOUT_FILENAME} and dataset_info.json disagree on the bytes of split "
                f"{split!r} {here} ({sum(ours_bytes or [])} vs {num_bytes}, records of "
                f"{frame} bytes): one of them was edited. Rebuild the dataset, or restore "
                "both files."
            )
