"""Build plans: validated splits, and the shard arithmetic of each split.

Pure numpy. Everything a build can reject is rejected here, before a single
byte is written, so bad input never leaves a half-written dataset behind.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfds_bigarrays._build.generator import GeneratorSplit, spool
from tfds_bigarrays._build.sources import (
    ArraySource,
    ClassLabelSource,
    RowRangeSource,
    layers,
    open_source,
)
from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._format.records import RecordCodec
from tfds_bigarrays._format.spec import FeatureSpec, check_feature_name

MiB = 1 << 20
DEFAULT_SHARD_BYTES = 128 * MiB
MIN_SHARD_BYTES = 1 << 10
DEFAULT_BLOCK_BYTES = 8 * MiB
# More shards than a file system lists comfortably; a larger count is a mistake.
MAX_SHARDS = 100_000
# A serialized tf.train.Example must stay below protobuf's 2 GiB message limit,
# or neither TensorFlow nor stock TFDS can parse it.
MAX_RECORD_BYTES = (1 << 31) - 1

_log = logging.getLogger(__name__)
_DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# major.minor.patch without leading zeros: TFDS's own rule.
VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
# Names become parts of shard file names, which a file system caps at 255 bytes.
MAX_NAME_LENGTH = 100


class PlanError(TfdsBigarraysError, ValueError):
    """The requested dataset cannot be built as described."""


def check_dataset_name(name: Any) -> str:
    """Returns `name` if it is a valid TFDS dataset name, else raises PlanError."""
    if isinstance(name, str) and _DATASET_NAME.fullmatch(name) and len(name) > MAX_NAME_LENGTH:
        raise PlanError(
            f"name={name[:20]}...{name[-10:]} has {len(name)} characters; at most "
            f"{MAX_NAME_LENGTH} fit in shard file names. Choose a shorter name."
        )
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        suggestion = ""
        if isinstance(name, str):
            cleaned = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
            cleaned = re.sub(r"^[0-9_]+", "", cleaned)
            if cleaned:
                suggestion = f" For example {cleaned!r}."
        raise PlanError(
            f"name={name!r} is not a valid dataset name: use lower-case letters, "
            "digits and '_', starting with a letter (no '/', '..', spaces or "
            f"upper case).{suggestion}"
        )
    return name


def check_bytes(value: Any, *, what: str, minimum: int) -> int:
    """Returns `value` if it is an int number of bytes >= `minimum`, else raises."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlanError(f"{what}={value!r} must be an int >= {minimum} (bytes).")
    return value


def check_seed(value: Any, *, what: str = "permute_seed") -> int | None:
    """Returns `value` if it is None or an int in [0, 2**63), else raises PlanError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise PlanError(f"{what}={value!r} must be None or an int in [0, 2**63).")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowRange:
    """Rows `[start, stop)` of a split that go into one shard."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def shard_ranges(num_examples: int, *, frame_bytes: int, shard_bytes: int) -> list[RowRange]:
    """Splits `num_examples` into near-equal shards of at most `shard_bytes`.

    A shard holds at least one example even if that example is larger than
    `shard_bytes`.
    """
    per_shard = max(1, shard_bytes // max(1, frame_bytes))
    num_shards = max(1, -(-num_examples // per_shard))
    if num_shards > MAX_SHARDS:
        raise PlanError(
            f"{num_examples} examples of {frame_bytes} bytes would need {num_shards} shards "
            f"of at most {shard_bytes} bytes; at most {MAX_SHARDS} are written per split. "
            "Raise the shard size (shard_bytes=; SHARD_BYTES in a builder class)."
        )
    bounds = [num_examples * i // num_shards for i in range(num_shards + 1)]
    return [RowRange(index=i, start=bounds[i], stop=bounds[i + 1]) for i in range(num_shards)]


def block_ranges(
    start: int, stop: int, *, frame_bytes: int, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> list[tuple[int, int]]:
    """Row ranges small enough to encode at once without holding a shard."""
    step = max(1, block_bytes // max(1, frame_bytes))
    return [(a, min(a + step, stop)) for a in range(start, stop, step)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitPlan:
    name: str
    sources: Mapping[str, ArraySource]
    num_examples: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetPlan:
    """What to build: opened, cross-checked sources for every split."""

    splits: Mapping[str, SplitPlan]
    specs: Mapping[str, FeatureSpec]
    supervised_keys: tuple[Any, ...] | None
    # feature -> its class names, or its number of classes (names '0', '1', ...)
    class_labels: Mapping[str, tuple[str, ...] | int] = dataclasses.field(default_factory=dict)


# The split names TFDS, Keras and most training scripts look for.
_USUAL_SPLITS = ("train", "validation", "test")


def _warn_if_typo(split: str) -> None:
    """Warns (does not refuse: any name is allowed) about a near-miss of a usual name."""
    if split.startswith(_USUAL_SPLITS):
        return  # train_small, test2, trainA (TFDS's cycle_gan): deliberate names
    close = [
        usual
        for usual in difflib.get_close_matches(split.lower(), _USUAL_SPLITS, n=1, cutoff=0.75)
        if abs(len(usual) - len(split)) <= 1  # a slip of one or two keys, not another word
    ]
    if close:
        _log.warning(
            "split name %r looks like a typo of %r; it is built as %r, and "
            "tfds.load(split=%r) will not find it. Rename it if %r was meant.",
            split, close[0], split, close[0], close[0],
        )  # fmt: skip


def _check_no_overlap(plans: Mapping[str, SplitPlan]) -> None:
    """Refuses two splits that take the same rows of one array, through a row range."""
    uses: dict[str, list[tuple[str, str, int, int, bool]]] = {}
    for split in plans.values():
        for feature, source in split.sources.items():
            # Through a label's wrapper: its rows are its source's rows.
            part = next((s for s in layers(source) if isinstance(s, RowRangeSource)), None)
            if part is not None:
                key, a, b, ranged = part.inner.description, part.start, part.stop, True
            else:
                key, a, b, ranged = source.description, 0, len(source), False
            uses.setdefault(key, []).append((split.name, feature, a, b, ranged))
    for key, entries in uses.items():
        for i, (s1, f1, a1, b1, r1) in enumerate(entries):
            for s2, f2, a2, b2, r2 in entries[i + 1 :]:
                if s1 != s2 and (r1 or r2) and max(a1, a2) < min(b1, b2):
                    raise PlanError(
                        f"splits {s1!r} and {s2!r} overlap: {s1}'s {f1} takes rows {a1}:{b1} "
                        f"and {s2}'s {f2} rows {a2}:{b2} of {key}, so rows "
                        f"{max(a1, a2)}:{min(b1, b2)} would be in both. Make the ranges "
                        "meet, e.g. x.npy[:90%] and x.npy[90%:]."
                    )


def _supervised_keys(value: Any, specs: Mapping[str, FeatureSpec]) -> tuple[Any, ...]:
    """(input, target) or (input, target, weights), each a feature name or a
    nest of them (tuples, lists, dicts), as TFDS's `supervised_keys`."""
    usage = (
        f"supervised_keys={value!r} must be (input, target) or (input, target, weights), "
        "each a feature name or a tuple or dict of them, e.g. ('x', 'y') or "
        f"(('x1', 'x2'), 'y'); the dataset has features {sorted(specs)}."
    )

    def nest(item: Any) -> Any:
        if isinstance(item, str):
            if item not in specs:
                raise PlanError(
                    f"supervised_keys={value!r} must name two features of the dataset "
                    "(input, target; each may be a tuple or dict of names); "
                    f"{item!r} is not one: it has {sorted(specs)}."
                )
            return item
        if isinstance(item, (tuple, list)) and item:
            return tuple(nest(i) for i in item)
        if isinstance(item, Mapping) and item and all(isinstance(k, str) for k in item):
            return {k: nest(v) for k, v in item.items()}
        raise PlanError(usage)

    if isinstance(value, (str, bytes)):
        raise PlanError(
            f"supervised_keys={value!r} is a string; give two feature names (input, "
            "target), e.g. ('x', 'y'), or tuples of names, e.g. (('x1', 'x2'), 'y')."
        )
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise PlanError(usage)
    return tuple(nest(item) for item in value)


MAX_CLASSES = 1 << 32  # labels are stored as uint32


def _class_labels(value: Any) -> dict[str, tuple[str, ...] | int]:
    """class_labels={feature: [names...] or num_classes}, checked."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlanError(
            f"class_labels={value!r} must map a feature to its class names or number "
            "of classes, e.g. {'y': ['cat', 'dog']} or {'y': 10}."
        )
    out: dict[str, tuple[str, ...] | int] = {}
    for feature, classes in value.items():
        where = f"class_labels[{feature!r}]={classes!r}"
        if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
            if not 1 <= int(classes) <= MAX_CLASSES:
                raise PlanError(f"{where}: a number of classes is 1..2**32.")
            out[feature] = int(classes)
            continue
        if isinstance(classes, np.ndarray):
            classes = classes.tolist()
        if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
            raise PlanError(f"{where} must be a list of class names or a number of classes.")
        names = tuple(classes)
        bad = [n for n in names if not isinstance(n, str) or not n or "\n" in n]
        if bad:
            raise PlanError(
                f"{where}: class names are non-empty one-line strings; {bad[0]!r} is not."
            )
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise PlanError(f"{where}: {twice[0]!r} is given twice; class names must differ.")
        out[feature] = names
    return out


def _wrap_labels(
    split: str,
    sources: dict[str, ArraySource],
    labels: Mapping[str, tuple[str, ...] | int],
) -> None:
    for feature, classes in labels.items():
        if feature not in sources:
            raise PlanError(
                f"class labels are given for feature {feature!r}, which split {split!r} "
                f"does not have (its features: {sorted(sources)})."
            )
        source = sources[feature]
        if isinstance(source, ClassLabelSource):
            continue
        spec = source.spec
        if spec.shape != () or not (
            np.issubdtype(spec.dtype, np.integer) or spec.dtype == np.bool_
        ):
            raise PlanError(
                f"class labels are given for feature {feature!r}, which is {spec} "
                f"({source.description}); a class label is one integer per example "
                "(shape (), an integer dtype)."
            )
        n = classes if isinstance(classes, int) else len(classes)
        sources[feature] = ClassLabelSource(source, n, feature=feature)


def make_plan(
    splits: Mapping[str, Mapping[str, Any]],
    *,
    supervised_keys: Sequence[Any] | None = None,
    root: Any = None,
    max_examples_per_split: int | None = None,
    random_access: bool = False,
    spool_dir: Any = None,
    fetch: Any = None,
    class_labels: Mapping[str, Any] | None = None,
) -> DatasetPlan:
    """Opens and cross-checks every source of every split.

    Args:
      splits: split name -> feature name -> source (see `open_source`).
      supervised_keys: optional (input, target) feature names, or nests of them.
      root: directory that relative paths are taken from.
      max_examples_per_split: keep only the first N rows of each split.
      random_access: every source must read rows in any order (`take`), as a
        permuted write order needs.
      spool_dir: where generator splits are spooled (required if any).
      fetch: downloads http(s) sources (see `open_source`).
      class_labels: feature -> class names (a list) or number of classes: the
        feature becomes a `tfds.features.ClassLabel`, its values checked.

    Returns:
      A `DatasetPlan`.

    Raises:
      PlanError: or a `SourceError`/`SpecError`, naming the argument at fault.
    """
    if not isinstance(splits, Mapping) or not splits:
        raise PlanError(
            f"splits={splits!r} must be a non-empty mapping of split name to "
            "{feature: source}, e.g. {'train': {'x': 'x.npy', 'y': 'y.npy'}}."
        )
    labels = _class_labels(class_labels)
    plans: dict[str, SplitPlan] = {}
    specs: dict[str, FeatureSpec] | None = None
    first_split = None
    for split, features in splits.items():
        if (
            not isinstance(split, str)
            or not _SPLIT_NAME.fullmatch(split)
            or split == "all"
            or len(split) > MAX_NAME_LENGTH
        ):
            raise PlanError(
                f"split name {split!r} is not valid: use letters, digits and '_', at most "
                f"{MAX_NAME_LENGTH} (for example 'train' or 'validation'; 'all' is reserved)."
            )
        _warn_if_typo(split)
        if isinstance(features, GeneratorSplit):
            if spool_dir is None:
                raise PlanError(f"split {split!r}: generator splits need a spool directory.")
            features = spool(split, features, spool_dir)
        if not isinstance(features, Mapping) or not features:
            raise PlanError(
                f"split {split!r}: expected a non-empty mapping of feature name to "
                f"source, got {features!r}."
            )
        sources = {}
        for feature, value in features.items():
            check_feature_name(feature, what=f"split {split!r} feature name")
            sources[feature] = open_source(value, feature=feature, root=root, fetch=fetch)
        _wrap_labels(split, sources, labels)
        if random_access:
            for feature, source in sources.items():
                if not getattr(source, "random_access", False):
                    raise PlanError(
                        f"split {split!r} feature {feature!r} ({source.description}) cannot "
                        "be read in a permuted order (compressed .npz members and "
                        "streams read forward only). Use a .npy file or an uncompressed "
                        ".npz, or build without a permuted write order."
                    )
        lengths = {f: len(s) for f, s in sources.items()}
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{f}={n} ({sources[f].description})" for f, n in lengths.items())
            raise PlanError(
                f"split {split!r}: features have different numbers of examples: "
                f"{detail}. Every feature of a split needs one row per example."
            )
        num_examples = next(iter(lengths.values()))
        if max_examples_per_split is not None:
            num_examples = min(num_examples, max_examples_per_split)
        if num_examples == 0:
            raise PlanError(
                f"split {split!r} has no examples ({', '.join(s.description for s in sources.values())}). "
                "Leave the split out or give it at least one row."
            )
        split_specs = {f: s.spec for f, s in sources.items()}
        if specs is None:
            specs, first_split = split_specs, split
        elif split_specs != specs:
            raise PlanError(
                f"split {split!r} has features "
                f"{ {f: str(s) for f, s in split_specs.items()} } but split "
                f"{first_split!r} has { {f: str(s) for f, s in specs.items()} }. "
                "All splits need the same feature names, dtypes and row shapes."
            )
        plans[split] = SplitPlan(name=split, sources=sources, num_examples=num_examples)
    assert specs is not None
    _check_no_overlap(plans)
    if all(s.row_bytes == 0 for s in specs.values()):
        raise PlanError(
            f"every feature has rows of no values ({', '.join(f'{f}: {s}' for f, s in specs.items())}): "
            "the dataset would hold only record framing, about 20 bytes per row. Give at "
            "least one feature with values."
        )
    record_bytes = RecordCodec(specs).record_bytes
    if record_bytes > MAX_RECORD_BYTES:
        sizes = ", ".join(f"{f}: {s} = {s.row_bytes} bytes" for f, s in specs.items())
        raise PlanError(
            f"One example would be a record of {record_bytes} bytes ({sizes}), above "
            f"the {MAX_RECORD_BYTES}-byte limit of a tf.train.Example. Split each row "
            "into several examples (reshape so the first axis has more rows)."
        )
    keys = None
    if supervised_keys is not None:
        keys = _supervised_keys(supervised_keys, specs)
    return DatasetPlan(splits=plans, specs=specs, supervised_keys=keys, class_labels=labels)
