"""`tfds_bigarrays.build`: build a dataset from arrays without writing a class."""

from __future__ import annotations

import os
import pathlib
import types
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from tfds_bigarrays._build.builder import ArrayDatasetBuilder, DatasetExistsError
from tfds_bigarrays._build.plan import (
    DEFAULT_SHARD_BYTES,
    MIN_SHARD_BYTES,
    VERSION,
    PlanError,
    check_bytes,
    check_dataset_name,
    check_seed,
    make_plan,
)
from tfds_bigarrays._build.scratch import scratch_dir
from tfds_bigarrays._build.sources import SourceError
from tfds_bigarrays._errors import MissingDependencyError
from tfds_bigarrays._files import user_path
from tfds_bigarrays._read.plan import DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET


def _check_not_in_catalog(name: str) -> None:
    # tfds.load(name) goes to a catalog dataset before looking at files: it would
    # try to download TFDS's dataset instead of loading these arrays.
    if name in tfds.list_builders(with_community_datasets=False):
        raise PlanError(
            f"name={name!r} is a dataset of TFDS's catalog: tfds.load({name!r}) would load "
            f"(and try to download) TFDS's {name}, not these arrays. Choose another name, "
            f"for example {name + '_arrays'!r}."
        )


def _check_version(version: Any) -> str:
    text = str(version)
    if not VERSION.fullmatch(text):
        raise PlanError(
            f"version={version!r} must look like '1.0.0' (major.minor.patch, no leading zeros)."
        )
    return text


def _check_flag(value: Any, *, what: str) -> bool:
    # A truthy string such as "no" must not switch on a rebuild or Beam.
    if isinstance(value, bool):
        return value
    if value is None and what == "beam":
        return False  # the default before Beam became opt-in
    raise PlanError(f"{what}={value!r} must be True or False.")


DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _dask_options(dask: Any, beam_options: Any) -> Any:
    """Beam options for a build on the Dask cluster at `dask`, else `beam_options`."""
    if dask is None:
        return beam_options
    if not isinstance(dask, str) or "://" not in dask:
        raise PlanError(
            f"dask={dask!r} is not a scheduler address; give it with its protocol, "
            "e.g. 'tcp://HEAD:8786'."
        )
    if beam_options is not None:
        raise PlanError(
            f"dask={dask!r} and beam_options={beam_options!r} both given; give one of them "
            f"(dask=ADDRESS stands for runner={DASK_RUNNER},dask_client_address=ADDRESS)."
        )
    try:
        import distributed  # noqa: F401  (Beam's Dask runner needs it)
    except ImportError:
        raise MissingDependencyError(
            f"dask={dask!r} needs Dask's distributed and Apache Beam: "
            "pip install 'tfds-bigarrays[beam]'."
        ) from None
    return f"runner={DASK_RUNNER},dask_client_address={dask}"


def _check_data_dir(data_dir: Any) -> str | None:
    if data_dir is None:
        return None
    if not isinstance(data_dir, (str, os.PathLike)):
        raise PlanError(
            f"data_dir={data_dir!r} (type {type(data_dir).__name__}) must be a path "
            "(str or os.PathLike), or None for TFDS's default."
        )
    text = os.fspath(data_dir)
    if not isinstance(text, str) or not text or "\0" in text:
        raise PlanError(f"data_dir={data_dir!r} is not a usable directory path.")
    text = user_path(text)
    if os.path.exists(text) and not os.path.isdir(text):
        raise PlanError(
            f"data_dir={text!r} is a file, not a directory. Give the TFDS data "
            "directory that datasets are built into."
        )
    return text


def builder_class(
    name: str,
    *,
    version: str = "1.0.0",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    permute_seed: int | None = None,
    beam: bool = False,
    beam_options: Any = None,
    description: str | None = None,
) -> type[ArrayDatasetBuilder]:
    """An unregistered `ArrayDatasetBuilder` subclass named `name`.

    Unregistered, so that several builds of one name can share a process; a
    later `tfds.load(name)` finds the data through its files.
    """
    check_dataset_name(name)
    _check_not_in_catalog(name)
    version = _check_version(version)
    if description is not None and not isinstance(description, str):
        raise PlanError(f"description={description!r} must be a string or None.")
    attrs = {
        "name": name,
        "VERSION": tfds.core.Version(version),
        "RELEASE_NOTES": {version: "Built with tfds-bigarrays."},
        "SHARD_BYTES": check_bytes(shard_bytes, what="shard_bytes", minimum=MIN_SHARD_BYTES),
        "READ_MEMORY_BUDGET": check_bytes(
            memory_budget, what="memory_budget", minimum=MIN_MEMORY_BUDGET
        ),
        "PERMUTE_SEED": check_seed(permute_seed),
        "BEAM": _check_flag(beam, what="beam"),
        "BEAM_OPTIONS": beam_options,
        "DESCRIPTION": description or f"Arrays converted by tfds-bigarrays into {name}.",
        # The public package, not this private module: moving code never changes
        # what dataset_info.json records as the builder's module.
        "__module__": "tfds_bigarrays",
    }
    class_name = "".join(p.capitalize() for p in name.split("_")) or "Arrays"
    return types.new_class(
        class_name,
        (ArrayDatasetBuilder,),
        {"skip_registration": True},
        lambda ns: ns.update(attrs),
    )


def build(
    name: str,
    *,
    splits: Mapping[str, Mapping[str, Any]],
    data_dir: str | os.PathLike | None = None,
    supervised_keys: Sequence[Any] | None = None,
    class_labels: Mapping[str, Any] | None = None,
    version: str = "1.0.0",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    permute_seed: int | None = None,
    beam: bool = False,
    beam_options: Any = None,
    dask: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
    checksums_dir: str | os.PathLike | None = None,
    register_checksums: bool = False,
) -> tfds.core.DatasetBuilder:
    """Builds a TFDS dataset from arrays and returns its builder.

    Every source is opened and checked before anything is written, so bad
    input leaves no folder behind.

    Args:
      name: dataset name (lower snake case), as later given to `tfds.load`.
      splits: split name -> feature name -> source (a numpy array, a `.npy`
        path, a directory of `.npy` shards, `PATH.npz:MEMBER`,
        `PATH.h5:/DATASET`), or split name -> `from_generator(...)`.
      data_dir: TFDS data directory (default: TFDS's, `~/tensorflow_datasets`).
      supervised_keys: what `as_supervised=True` yields: (input, target) or
        (input, target, weights), each a feature name or a tuple or dict of
        them, e.g. `(('x1', 'x2'), 'y')` for a two-input Keras model.
      class_labels: features that are class ids: feature -> class names
        (`{'y': ['cat', 'dog']}`) or number of classes (`{'y': 10}`). Each
        becomes a `tfds.features.ClassLabel` (`info.features['y'].names`),
        read back as int64; a value outside 0..num_classes-1 fails the build.
      version: dataset version, `major.minor.patch`.
      shard_bytes: bound on each shard file's size.
      memory_budget: default bound, in bytes, on the reader's buffers together
        (groups being read and prefetched; with sequential access also the
        shuffle buffer and interleave); `ReadOptions` overrides it.
      permute_seed: write rows in a keyed pseudo-random order instead of array
        order, so that reading with shuffling approaches a full permutation
        every epoch (see README); None keeps array order.
      beam: build through Apache Beam (True) or in this process (False,
        the default, whatever the size: faster on one machine). Pipeline
        options imply Beam.
      beam_options: Beam pipeline options: 'runner=...,k=v' flags, a list of
        flags, or `PipelineOptions`; default DirectRunner, multi-processing,
        one worker per core.
      dask: a Dask scheduler's address, e.g. 'tcp://HEAD:8786': each shard is
        written by a task on that cluster (Beam's Dask runner; the rows of a
        Dask or Zarr array are computed or read there, never on this machine).
      description: free text recorded in `dataset_info.json`.
      overwrite: rebuild if this version already exists.
      checksums_dir: where http(s) sources' sizes and sha256 are kept, as
        `NAME.tsv` in TFDS's checksums format (default: ./checksums).
      register_checksums: record the checksums of downloaded URLs; otherwise
        every URL must already be registered, and is verified.

    Returns:
      The builder; `builder.as_dataset(...)` or `tfds.load(name, ...)` read it.

    Raises:
      PlanError, SourceError, SpecError: bad input, named.
      DatasetExistsError: the version exists and `overwrite` is False.
    """
    data_dir = _check_data_dir(data_dir)
    beam_options = _dask_options(dask, beam_options)
    if beam_options is not None:  # a bad runner is refused now, not mid-build
        from tfds_bigarrays._build.beam import pipeline_options

        pipeline_options(beam_options)
    overwrite = bool(_check_flag(overwrite, what="overwrite"))
    register_checksums = bool(_check_flag(register_checksums, what="register_checksums"))
    cls = builder_class(
        name,
        version=version,
        shard_bytes=shard_bytes,
        memory_budget=memory_budget,
        permute_seed=permute_seed,
        beam=beam,
        beam_options=beam_options,
        description=description,
    )
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    target = cls(data_dir=data_dir)
    _check_writable(epath.Path(target.data_dir_root))
    _check_not_built(target, overwrite=overwrite)
    with scratch_dir(epath.Path(target.data_dir_root) / name) as scratch:
        spool_dir = os.fspath(scratch)
        plan = make_plan(
            splits,
            supervised_keys=supervised_keys,
            class_labels=class_labels,
            random_access=permute_seed is not None,
            spool_dir=spool_dir,
            fetch=_url_fetcher(
                name,
                download_dir=os.path.join(spool_dir, "downloads"),
                checksums_dir=checksums_dir,
                register=register_checksums,
            ),
        )
        return _build(cls, plan, data_dir=data_dir, overwrite=overwrite)


def _url_fetcher(name: str, *, download_dir: str, checksums_dir, register: bool):
    """Downloads through TFDS's download manager, verifying registered checksums."""

    def fetch(url: str) -> str:
        from tensorflow_datasets.core.download import checksums

        path = epath.Path(user_path(checksums_dir or "checksums")) / f"{name}.tsv"
        infos = checksums.load_url_infos(path) if path.exists() else {}
        manager = tfds.download.DownloadManager(
            download_dir=download_dir,
            url_infos=infos,
            dataset_name=name,
            register_checksums=register,
            register_checksums_path=path if register else None,
            force_checksums_validation=not register,
        )
        if register:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return os.fspath(manager.download(url))
        except Exception as e:  # TFDS raises several types; all mean the same here
            raise SourceError(
                f"{url}: download or checksum verification failed: {e}. If the file "
                "changed on purpose, register it again with --register-checksums."
            ) from e

    return fetch


def _check_writable(root: epath.Path) -> None:
    """Refuses a data directory this process cannot write, before anything is written."""
    if "://" in os.fspath(root):
        return  # object stores: their own permissions, checked by the first write
    existing = pathlib.Path(os.fspath(root))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PlanError(
            f"data_dir={os.fspath(root)!r} cannot be written: {existing} is not writable by "
            "this user. Choose a directory you can write (data_dir=), or fix its permissions."
        )


def _check_not_built(builder: tfds.core.DatasetBuilder, *, overwrite: bool) -> None:
    if epath.Path(builder.data_path).exists() and not overwrite:
        raise DatasetExistsError(
            f"{builder.name} version {builder.version} already exists at "
            f"{builder.data_path}. Pass overwrite=True to rebuild it, "
            "or give a new version (version=)."
        )


def _build(cls, plan, *, data_dir, overwrite) -> tfds.core.DatasetBuilder:
    builder = cls(plan=plan, data_dir=data_dir)
    _check_not_built(builder, overwrite=overwrite)
    mode = (
        tfds.download.GenerateMode.FORCE_REDOWNLOAD
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(download_mode=mode, try_download_gcs=False)
    )
    return builder
