"""Lets `tfds.load("namespace:name[:version]")` resolve through our registry."""

from __future__ import annotations

import functools
import os

from tensorflow_datasets.core import read_only_builder

from tfds_bigarrays._files import user_path

_MARK = "__tfds_bigarrays_wrapped__"


def install() -> None:
    """Wraps `tfds.builder` (and so `tfds.load`) once.

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
        data_dir = builder_kwargs.get("data_dir")
        if isinstance(data_dir, (str, os.PathLike)):
            # data_dir="~/tensorflow_datasets" as our CLI and build() take it;
            # TFDS would look for a folder named "~".
            builder_kwargs["data_dir"] = user_path(data_dir)
        if isinstance(name, str) and ":" in name:
            from tfds_bigarrays._registry import lookup as _registry

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
