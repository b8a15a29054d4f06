"""A `tf.data.Dataset` whose pipeline is built on first use.

Creating any tf.data pipeline in eager mode runs TensorFlow ops, which
initializes TensorFlow's devices; after that, GPU memory limits and virtual
devices can no longer be set. `tfds.load` returns this instead, so that

    ds = tfds.load("my_arrays", ...)
    tfds_bigarrays.gpu.limit_memory(2048)   # still allowed here
    model.fit(ds)

works. Everything that inspects the dataset's structure (`element_spec`) is
answered without building; anything that needs the real pipeline
(iteration, transformations, options, cardinality) builds it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


class LazyDataset(tf.data.Dataset):
    """Defers `factory()` until the dataset is used."""

    def __init__(self, factory: Callable[[], tf.data.Dataset], element_spec: Any):
        # DatasetV2.__init__ needs the variant tensor, i.e. the real pipeline:
        # it is deliberately not called; the attributes it would set are
        # properties below.
        self._factory = factory
        self._lazy_element_spec = element_spec
        self._real: tf.data.Dataset | None = None

    def _materialize(self) -> tf.data.Dataset:
        if self._real is None:
            real = self._factory()
            if real.element_spec != self._lazy_element_spec:
                raise AssertionError(  # a bug of ours, not a user error
                    f"pipeline spec {real.element_spec} != announced {self._lazy_element_spec}"
                )
            self._real = real
        return self._real

    @property
    def _variant_tensor_attr(self):  # type: ignore[override]
        return self._materialize()._variant_tensor

    @property
    def _graph_attr(self):  # type: ignore[override]
        return self._materialize()._graph

    @property
    def _options_attr(self):  # type: ignore[override]
        return self._materialize().options()

    def _inputs(self) -> list[tf.data.Dataset]:
        return [self._materialize()]

    @property
    def element_spec(self) -> Any:
        return self._lazy_element_spec

    @property
    def is_built(self) -> bool:
        """Whether the real pipeline exists yet (and devices are initialized)."""
        return self._real is not None
