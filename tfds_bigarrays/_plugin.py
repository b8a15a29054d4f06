"""Routes `tfds.load` of our datasets to our read path.

A dataset built by tfds_bigarrays is loaded in another process through TFDS's
`ReadOnlyBuilder` (the builder class is not registered there). Importing
tfds_bigarrays wraps that class's `_build_single_dataset` once: datasets with
our layout file get our pipeline; every other dataset is untouched.
"""

from __future__ import annotations

import functools

from tensorflow_datasets.core import read_only_builder

_MARK = "__tfds_bigarrays_wrapped__"


def install() -> None:
    cls = read_only_builder.ReadOnlyBuilder
    original = cls._build_single_dataset
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _build_single_dataset(
        self, split, batch_size, shuffle_files, decoders, read_config, as_supervised
    ):
        from tfds_bigarrays import _reader  # TensorFlow: imported on first read

        return _reader.build_single_dataset(
            self,
            functools.partial(original, self),
            split=split,
            batch_size=batch_size,
            shuffle_files=shuffle_files,
            decoders=decoders,
            read_config=read_config,
            as_supervised=as_supervised,
        )

    setattr(_build_single_dataset, _MARK, True)
    cls._build_single_dataset = _build_single_dataset


def install_namespaces() -> None:
    """Lets `tfds.load("namespace:name[:version]")` resolve through our registry.

    Only names whose namespace is in the registry named by
    TFDS_BIGARRAYS_REGISTRY are taken; everything else goes to TFDS as before.
    """
    import tensorflow_datasets as tfds_module
    from tensorflow_datasets.core import load, naming

    original = load.builder
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def builder(name, *, try_gcs: bool = False, **builder_kwargs):
        if isinstance(name, str) and ":" in name:
            from tfds_bigarrays import _registry

            ds_name, kwargs = naming.parse_builder_name_kwargs(name, **builder_kwargs)
            registry = _registry.env_registry()
            namespace = ds_name.namespace
            if namespace and registry.namespaces and namespace != "huggingface":
                directory = registry.dataset_dir(namespace, ds_name.name, kwargs.get("version"))
                return read_only_builder.builder_from_directory(directory)
        return original(name, try_gcs=try_gcs, **builder_kwargs)

    setattr(builder, _MARK, True)
    load.builder = builder
    if getattr(tfds_module, "builder", None) is original:
        tfds_module.builder = builder
