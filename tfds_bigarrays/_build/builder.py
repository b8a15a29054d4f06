"""`ArrayDatasetBuilder`: a TFDS builder whose examples are rows of arrays."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import pickle
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from etils import epath

from tfds_bigarrays._build.beam import write_with_beam
from tfds_bigarrays._build.plan import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_SHARD_BYTES,
    MIN_SHARD_BYTES,
    DatasetPlan,
    PlanError,
    check_bytes,
    check_dataset_name,
    check_seed,
    make_plan,
    shard_ranges,
)
from tfds_bigarrays._build.scratch import (
    OWNER_FILE,
    exchange,
    locked,
    owned,
    remove_abandoned,
    remove_empty_tree,
    sync_tree,
)
from tfds_bigarrays._build.sources import ChunkedRows, InMemorySource, NpyFileSource, layers
from tfds_bigarrays._build.writer import ShardTask, receipt_path, run_task
from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._files import user_path, version_identity
from tfds_bigarrays._format.layout import Layout, write_layout
from tfds_bigarrays._format.permutation import Permutation
from tfds_bigarrays._format.records import RecordCodec
from tfds_bigarrays._read.features import to_tfds_features
from tfds_bigarrays._read.hooks import data_source_hook
from tfds_bigarrays._read.plan import DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET
from tfds_bigarrays._version import __version__

# A Beam task's sources pickled bigger than this carry rows: spooled to a file.
_MAX_TASK_SOURCE_BYTES = 1 << 20
_SPOOL_DIR = "spool.incomplete"


class BuildError(TfdsBigarraysError, RuntimeError):
    """A build failed part-way (a worker lost a shard); nothing loadable is left."""


class DatasetExistsError(TfdsBigarraysError, FileExistsError):
    """The dataset version is already built; versions are never overwritten silently."""


def _relative_paths(splits: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    out: list[str] = []
    if not isinstance(splits, Mapping):  # refused, with the value, by make_plan
        return out
    for features in splits.values():
        if not isinstance(features, Mapping):
            continue
        for value in features.values():
            if isinstance(value, (str, os.PathLike)) and not os.path.isabs(user_path(value)):
                out.append(os.fspath(value))
    return out


def _script_dir(cls: type) -> epath.Path | None:
    """The folder of a builder defined in a script or a top-level module.

    TFDS looks for a builder's metadata (checksums.tsv, README) in the package
    of its module, and fails obscurely ("'train' is not a package") when the
    module is not in one. Such a builder gets its file's folder instead.
    """
    top = sys.modules.get(cls.__module__.split(".")[0])
    if top is not None and hasattr(top, "__path__"):
        return None  # in a package: TFDS finds the folder itself
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return epath.Path(os.path.dirname(os.path.abspath(file)) if file else os.getcwd())


def _check_file_format(value: Any, builder: str) -> None:
    """Refuses a file format other than TFRecord, before anything is written.

    TFDS would name the shards after the format asked for while we write
    TFRecord bytes into them: stock TFDS, ArrayRecord readers and
    `tfds.data_source` would then fail on every file.
    """
    if value is None:
        return
    try:
        fmt = tfds.core.FileFormat.from_value(value)
    except ValueError:
        fmt = None
    if fmt is not tfds.core.FileFormat.TFRECORD:
        raise PlanError(
            f"file_format={getattr(value, 'value', value)!r} is not supported "
            f"by {builder}: tfds_bigarrays writes TFRecord shards of fixed-length records, "
            "which tfds.data_source reads by index too. Leave file_format out, or pass 'tfrecord'."
        )


class ArrayDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):  # type: ignore[call-arg]
    """A TFDS dataset whose examples are the rows of NumPy arrays.

    Subclass it declaratively::

        class MyArrays(tfds_bigarrays.ArrayDatasetBuilder):
          VERSION = tfds.core.Version("1.0.0")
          RELEASE_NOTES = {"1.0.0": "Initial release."}
          SPLITS = {
              "train": {"x": "x_train.npy", "y": "y_train.npy"},
              "validation": {"x": "x_val.npy", "y": "y_val.npy"},
          }
          SUPERVISED_KEYS = ("x", "y")

    Relative paths are taken from the TFDS manual directory
    (`tfds build --manual_dir=DIR`); absolute paths, numpy arrays and
    `PATH.npz:MEMBER` work too. Override `_split_sources` to compute them.

    Shards hold one serialized `tf.train.Example` per row, with the feature
    specs recorded in `features.json`, so stock TFDS reads the result; with
    `tfds_bigarrays` imported, `tfds.load` reads blocks of records, shuffles
    within `READ_MEMORY_BUDGET` bytes and decodes whole batches at once.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    SPLITS: ClassVar[Mapping[str, Mapping[str, Any]] | None] = None
    # (input, target), or (input, target, weights); each a feature name or a
    # tuple or dict of them, e.g. (('x1', 'x2'), 'y') for a two-input model.
    SUPERVISED_KEYS: ClassVar[tuple[Any, ...] | None] = None
    # Features that are class ids: feature -> class names, or number of
    # classes, e.g. {"label": ["cat", "dog"]}; they become ClassLabels.
    CLASS_LABELS: ClassVar[Mapping[str, Any] | None] = None
    SHARD_BYTES: ClassVar[int] = DEFAULT_SHARD_BYTES
    READ_MEMORY_BUDGET: ClassVar[int] = DEFAULT_MEMORY_BUDGET
    # Write rows in a keyed pseudo-random order (see README: shuffle quality).
    PERMUTE_SEED: ClassVar[int | None] = None
    # Build through Apache Beam; only when asked: on one machine the local
    # build is faster (docs/build_benchmark.md) and shows its progress.
    BEAM: ClassVar[bool] = False
    # Pipeline options ('runner=...,k=v' or a flag list); None: DirectRunner,
    # multi-processing, one worker per core.
    BEAM_OPTIONS: ClassVar[Any] = None
    DESCRIPTION: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "name" in cls.__dict__:
            # TFDS derives a valid name from the class name (just below); a
            # written one becomes a folder under data_dir: '../x' must not pass.
            check_dataset_name(cls.__dict__["name"])
        super().__init_subclass__(**kwargs)
        if "pkg_dir_path" not in cls.__dict__:
            folder = _script_dir(cls)
            if folder is not None:
                cls.pkg_dir_path = folder
        relative = _relative_paths(cls.__dict__.get("SPLITS"))
        if relative and "MANUAL_DOWNLOAD_INSTRUCTIONS" not in cls.__dict__:
            cls.MANUAL_DOWNLOAD_INSTRUCTIONS = (
                "Put these files in the manual directory (`tfds build "
                f"--manual_dir=DIR`): {', '.join(sorted(set(relative)))}."
            )

    def __init__(self, *, plan: DatasetPlan | None = None, **kwargs: Any):
        _check_file_format(kwargs.get("file_format"), type(self).__name__)
        if isinstance(kwargs.get("data_dir"), (str, os.PathLike)):
            kwargs["data_dir"] = user_path(kwargs["data_dir"])
        # A plan made (and checked) before construction, by `tfds_bigarrays.build`.
        self._plan = plan
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # Features are inferred from the sources at build time, and read back
        # from features.json when loading, unless a plan already knows them.
        plan = self._plan
        features = to_tfds_features(plan.specs, plan.class_labels) if plan else None
        keys = self._plan.supervised_keys if self._plan else self.SUPERVISED_KEYS
        info = self.dataset_info_from_configs(
            description=self.DESCRIPTION or (self.__doc__ or "").strip().split("\n")[0],
            features=features,
            # Anything but a tuple or list is refused, with our message, by the plan.
            supervised_keys=_tuples(keys) if isinstance(keys, (tuple, list)) and keys else None,
        )
        # TFDS fills the info of a dataset not built yet from its GCS bucket: a
        # catalog dataset of the same name would lend us its splits, and each
        # lookup leaves an empty temporary folder. Our datasets are never there.
        info.initialize_from_bucket = lambda: None  # type: ignore[method-assign]
        return info

    def _split_sources(
        self, dl_manager: tfds.download.DownloadManager
    ) -> Mapping[str, Mapping[str, Any]]:
        """Split name -> feature name -> source. Override to compute sources."""
        if self.SPLITS is None:
            raise PlanError(
                f"{type(self).__name__} declares no SPLITS. Set SPLITS = "
                "{'train': {'x': 'x.npy', 'y': 'y.npy'}} or override _split_sources()."
            )
        return self.SPLITS

    def _split_generators(self, dl_manager):  # pragma: no cover - not used
        raise NotImplementedError(
            "ArrayDatasetBuilder writes its shards itself; override _split_sources()."
        )

    def _generate_examples(self, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError(
            "ArrayDatasetBuilder writes its shards itself; override _split_sources()."
        )

    def _make_plan(self, dl_manager, download_config) -> DatasetPlan:
        if self._plan is not None:
            plan = self._plan
            limit = download_config.max_examples_per_split
            if limit is None:
                return plan
            return make_plan(
                {s: sp.sources for s, sp in plan.splits.items()},
                supervised_keys=plan.supervised_keys,
                max_examples_per_split=limit,
                random_access=self.PERMUTE_SEED is not None,
                class_labels=plan.class_labels,
            )
        sources = self._split_sources(dl_manager)
        # Only ask for the manual dir when it is needed: TFDS raises if unset.
        root = dl_manager.manual_dir if _relative_paths(sources) else None
        return make_plan(
            sources,
            supervised_keys=self.SUPERVISED_KEYS,
            class_labels=self.CLASS_LABELS,
            root=root,
            max_examples_per_split=download_config.max_examples_per_split,
            random_access=self.PERMUTE_SEED is not None,
            spool_dir=os.fspath(self.data_path / _SPOOL_DIR),
            # URLs go through TFDS's download manager: checksums.tsv beside
            # the builder, `tfds build --register_checksums` to record them.
            fetch=dl_manager.download,
        )

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        check_bytes(self.SHARD_BYTES, what="SHARD_BYTES", minimum=MIN_SHARD_BYTES)
        check_bytes(self.READ_MEMORY_BUDGET, what="READ_MEMORY_BUDGET", minimum=MIN_MEMORY_BUDGET)
        check_seed(self.PERMUTE_SEED, what="PERMUTE_SEED")
        # TFDS's `incomplete.*` folder: marked as ours while this process
        # lives, so that a later build can remove it if it dies.
        with owned(self.data_path):
            self._write_dataset(dl_manager, download_config)

    def _log_download_bytes(self) -> None:
        # TFDS prints download and dataset sizes here that it cannot know for
        # arrays ("Unknown size"); the progress bars that follow (TFDS's own
        # for downloads, ours for writing) say more.
        return

    def _log_download_done(self) -> None:
        # Printed by TFDS even when nothing was downloaded; the CLI prints
        # what was built, and the Python API returns the builder.
        return

    def _write_dataset(self, dl_manager, download_config) -> None:
        plan = self._make_plan(dl_manager, download_config)
        features = to_tfds_features(plan.specs, plan.class_labels)
        if self.info.features is None:
            # DatasetInfo has no public setter; features known only now.
            self.info._features = features  # noqa: SLF001
        codec = RecordCodec(plan.specs)
        tasks: dict[str, list[ShardTask]] = {}
        templates = {}
        for split in plan.splits.values():
            template = self._get_filename_template(split_name=split.name)
            ranges = shard_ranges(
                split.num_examples, frame_bytes=codec.frame_bytes, shard_bytes=self.SHARD_BYTES
            )
            permutation = None
            if self.PERMUTE_SEED is not None:
                permutation = Permutation(n=split.num_examples, seed=self.PERMUTE_SEED)
            templates[split.name] = template
            tasks[split.name] = [
                ShardTask(
                    sources=split.sources,
                    specs=plan.specs,
                    rows=rows,
                    path=os.fspath(path),
                    permutation=permutation,
                )
                for rows, path in zip(ranges, template.sharded_filepaths(len(ranges)), strict=True)
            ]
        spool = _Spooler(self.data_path / _SPOOL_DIR)
        if self.PERMUTE_SEED is not None:
            # A permuted order takes rows from all over the split in every
            # block: a Zarr or Dask source would decompress or compute every
            # chunk again per block. One forward pass into a file instead.
            tasks = {n: spool(ts, when=_chunked) for n, ts in tasks.items()}
        all_tasks = [t for ts in tasks.values() for t in ts]
        total_bytes = sum(len(t.rows) for t in all_tasks) * codec.frame_bytes
        beam_options = self._beam_options(download_config, total_bytes)
        if beam_options is not None:
            # Workers get tasks, not data: rows held in this process (an array,
            # an in-memory store) go to a file first, or every task would carry them.
            write_with_beam(spool(all_tasks, when=_carries_data), options=beam_options)
        else:
            _write_locally(tasks, frame_bytes=codec.frame_bytes)
        split_infos = []
        receipts: dict[str, list[dict[str, Any]]] = {}
        for name, split_tasks in tasks.items():
            lengths = [len(t.rows) for t in split_tasks]
            receipts[name] = [_check_written(t, frame_bytes=codec.frame_bytes) for t in split_tasks]
            split_infos.append(
                tfds.core.SplitInfo(
                    name=name,
                    shard_lengths=lengths,
                    num_bytes=sum(lengths) * codec.frame_bytes,
                    filename_template=templates[name],
                )
            )
        self.info.set_splits(tfds.core.SplitDict(split_infos))
        # Temporary files of writers that were killed mid-shard (their task
        # was retried elsewhere, or this build fails): never part of a dataset.
        for stray in self.data_path.glob("*.incomplete-*"):
            stray.unlink()
        spooled = self.data_path / _SPOOL_DIR
        if spooled.exists():  # generator rows: written into shards, not kept
            spooled.rmtree()
        write_layout(
            self.data_path,
            Layout(
                specs=plan.specs,
                record_bytes=codec.record_bytes,
                memory_budget=int(self.READ_MEMORY_BUDGET),
                permute_seed=self.PERMUTE_SEED,
                provenance={
                    "tfds_bigarrays": __version__,
                    "created": datetime.datetime.now(datetime.UTC).isoformat(),
                    "host": socket.gethostname(),
                    "sources": {
                        s.name: {f: src.description for f, src in s.sources.items()}
                        for s in plan.splits.values()
                    },
                    "shards": receipts,
                },
            ),
        )

    def _beam_options(self, download_config, total_bytes: int) -> Any:
        """Beam pipeline options if this build goes through Beam, else None.

        Beam is used only when asked: `BEAM = True`, `--beam`, or pipeline
        options (`BEAM_OPTIONS`, `--beam-options`, `tfds build
        --beam_pipeline_options`), whatever the dataset's size.
        """
        options = download_config.beam_options or self.BEAM_OPTIONS
        if options is not None or download_config.beam_runner is not None:
            return options if options is not None else []
        return [] if self.BEAM else None

    def download_and_prepare(self, *args: Any, **kwargs: Any) -> None:
        """As TFDS's; clears abandoned builds first, and on failure removes
        the folders it created.

        Never from TFDS's GCS bucket: a dataset of the same name and version
        there (say `mnist`) would silently replace the user's arrays, and
        looking it up leaves a temporary folder behind.
        """
        _check_file_format(kwargs.get("file_format"), type(self).__name__)
        config = kwargs.get("download_config") or tfds.download.DownloadConfig()
        kwargs["download_config"] = config = dataclasses.replace(config, try_download_gcs=False)
        if (
            config.download_mode.overwrite_dataset
            and (self.data_path / "dataset_info.json").exists()
        ):
            return self._rebuild_beside(*args, **kwargs)
        root = epath.Path(self.data_dir_root)
        downloads = epath.Path(kwargs.get("download_dir") or root / "downloads")
        # Innermost first, so that emptied parents can go too.
        created = [d for d in (root / self.name, downloads, root) if not d.exists()]
        if (root / self.name).exists():
            remove_abandoned(root / self.name)
        try:
            super().download_and_prepare(*args, **kwargs)
        except BaseException as e:
            # Only what this call created, and only if empty: another build may
            # be starting in the same folders.
            with contextlib.suppress(OSError):
                if downloads in created and downloads.exists():
                    remove_empty_tree(downloads)
            for folder in created:
                with contextlib.suppress(OSError, ValueError):  # not empty: not ours alone
                    folder.rmdir()
            final = epath.Path(self.data_path)
            lost_race = isinstance(e, FileExistsError) or (
                isinstance(e, OSError) and e.errno in (errno.ENOTEMPTY, errno.EEXIST)
            )
            if lost_race and (final / "dataset_info.json").exists():
                # TFDS renames its incomplete folder into place at the end;
                # another build of the same version got there first.
                raise DatasetExistsError(
                    f"{self.name} version {self.version} was finished by another build "
                    f"while this one ran; it is complete at {final}. Load it, or rebuild "
                    "with overwrite=True."
                ) from e
            raise

    def _rebuild_beside(self, *args: Any, **kwargs: Any) -> None:
        """`--overwrite` of a built version, which stays loadable until the end.

        TFDS would delete the version first, so that a failed rebuild (killed,
        out of disk, a bad source) left nothing. Here the new version is built
        in a folder beside it and swapped in with one rename when complete; on
        any failure the old version stays as it was. Of two rebuilds at once,
        the second to finish fails: the version it meant to replace is gone.
        """
        final = epath.Path(self.data_path)
        name_dir = final.parent
        before = version_identity(final)
        staging = name_dir / f".rebuild-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        config = dataclasses.replace(
            kwargs["download_config"],
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
        )
        kwargs = {
            **kwargs,
            "download_config": config,
            "download_dir": kwargs.get("download_dir")
            or epath.Path(self.data_dir_root) / "downloads",
        }
        remove_abandoned(name_dir)
        try:
            with owned(staging):  # marked until it is gone: a later build removes it if this dies
                try:
                    state = {**self._original_state, "data_dir": os.fspath(staging)}
                    staged = type(self)(plan=self._plan, **state)
                    staged.download_and_prepare(*args, **kwargs)
                    new = epath.Path(staged.data_path)
                    sync_tree(new)  # on disk before the old version goes
                    with locked(name_dir / f".{self.version}.lock"):
                        if version_identity(final) != before:
                            raise DatasetExistsError(
                                f"{self.name} version {self.version} was replaced by a concurrent "
                                f"build while this one ran ({final}); this build is discarded. Run "
                                "it again with overwrite=True if it should win."
                            )
                        exchange(new, final)
                    sync_tree(name_dir, files=False)
                finally:
                    for child in staging.iterdir():  # the old version, once swapped out
                        if child.name != OWNER_FILE:
                            child.rmtree() if child.is_dir() else child.unlink()
        finally:
            with contextlib.suppress(OSError):
                staging.rmdir()  # empty by now: its marker went with `owned`
        self.info.read_from_directory(final)

    # Random access without TensorFlow (see `tfds_bigarrays.data_source`).
    as_data_source = data_source_hook(tfds.core.GeneratorBasedBuilder.as_data_source)

    def _build_single_dataset(
        self, split, batch_size, shuffle_files, decoders, read_config, as_supervised
    ):
        from tfds_bigarrays._read import pipeline as _reader  # TensorFlow: imported on first read

        return _reader.build_single_dataset(
            self,
            super()._build_single_dataset,
            split=split,
            batch_size=batch_size,
            shuffle_files=shuffle_files,
            decoders=decoders,
            read_config=read_config,
            as_supervised=as_supervised,
        )


def _tuples(keys: Any) -> Any:
    """Supervised keys with lists as tuples, the nest TFDS's DatasetInfo stores."""
    if isinstance(keys, (list, tuple)):
        return tuple(_tuples(k) for k in keys)
    if isinstance(keys, Mapping):
        return {k: _tuples(v) for k, v in keys.items()}
    return keys


def _write_locally(tasks: Mapping[str, list[ShardTask]], *, frame_bytes: int) -> None:
    """Writes every shard in this process, with a progress bar per split."""
    for name, split_tasks in tasks.items():
        total = sum(len(t.rows) for t in split_tasks)
        start = time.perf_counter()
        with tqdm.tqdm(
            total=total,
            desc=f"Writing {name}",
            unit=" examples",
            unit_scale=True,
            leave=False,
            mininterval=0.5,
        ) as bar:

            def progress(examples: int, nbytes: int, bar=bar, start=start) -> None:
                bar.update(examples)
                seconds = max(time.perf_counter() - start, 1e-9)
                bar.set_postfix_str(f"{bar.n * frame_bytes / seconds / 1e6:.0f} MB/s")

            for task in split_tasks:
                run_task(task, on_block=progress)


def _carries_data(source: Any) -> bool:
    """Whether pickling the source (for a Beam task) would carry its rows."""
    if any(isinstance(s, InMemorySource) for s in layers(source)):
        return True
    try:  # in-memory Zarr stores, Dask graphs built from numpy arrays, ...
        # Only dumps: the size of what Beam itself pickles into each task.
        return len(pickle.dumps(source)) > _MAX_TASK_SOURCE_BYTES
    except Exception:  # not picklable at all: Beam would fail on it; spool it instead
        return True


def _chunked(source: Any) -> bool:
    return any(isinstance(s, ChunkedRows) for s in layers(source))


class _Spooler:
    """Sources replaced by `.npy` copies of their rows in `spool_dir`, each once."""

    def __init__(self, spool_dir: epath.Path):
        self.spool_dir = spool_dir
        self.files: dict[int, NpyFileSource] = {}

    def __call__(self, tasks: list[ShardTask], *, when) -> list[ShardTask]:
        return [
            dataclasses.replace(
                task, sources={n: self._source(s, n, when) for n, s in task.sources.items()}
            )
            for task in tasks
        ]

    def _source(self, source: Any, name: str, when) -> Any:
        if id(source) in self.files:
            return self.files[id(source)]
        if not when(source):
            return source
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = os.fspath(self.spool_dir / f"{len(self.files)}-{name}.npy")
        if isinstance(source, InMemorySource):
            np.save(path, source.array, allow_pickle=False)
        else:  # one forward pass, block by block (chunked sources read each chunk once)
            spec, n = source.spec, len(source)
            out = np.lib.format.open_memmap(
                path, mode="w+", dtype=spec.dtype, shape=(n, *spec.shape)
            )
            step = max(1, DEFAULT_BLOCK_BYTES // max(1, spec.row_bytes))
            for start in range(0, n, step):
                out[start : start + step] = source.read(start, min(n, start + step))
            out.flush()
            del out
        self.files[id(source)] = NpyFileSource(path, feature=name)
        return self.files[id(source)]


def _check_written(task: ShardTask, *, frame_bytes: int) -> dict[str, Any]:
    """Checks a shard against its worker's receipt; returns the receipt.

    Every shard must exist with exactly its rows' bytes and a receipt saying
    so (Beam workers too: a runner that lost a task fails here, not later at
    read time). The receipt file is removed; its content goes into the
    layout's provenance.
    """
    path = epath.Path(task.path)
    receipt_file = receipt_path(task.path)
    want = len(task.rows) * frame_bytes
    receipt: dict[str, Any] = {}
    if receipt_file.exists():
        receipt = json.loads(receipt_file.read_text())
        receipt_file.unlink()
    if not path.exists() or path.stat().length != want or receipt.get("num_bytes") != want:
        raise BuildError(
            f"Shard {task.path} is missing, has the wrong size or no receipt "
            f"after writing (want {want} bytes); a worker failed. Run the build again."
        )
    return {"file": path.name, **receipt}
