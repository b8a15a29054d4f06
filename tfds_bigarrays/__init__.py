"""tfds_bigarrays: NumPy arrays bigger than RAM as TFDS datasets.

Importing this package registers nothing globally except a wrapper on TFDS's
read-only builder, so that `tfds.load` of a dataset built here uses the
shuffled, batch-decoded read path. It does not initialize TensorFlow devices.
"""

from tfds_bigarrays import _plugin
from tfds_bigarrays._api import DatasetExistsError, build
from tfds_bigarrays._builder import ArrayDatasetBuilder
from tfds_bigarrays._generator import from_generator
from tfds_bigarrays._layout import Layout
from tfds_bigarrays._options import ReadOptions, read_options
from tfds_bigarrays._plan import PlanError
from tfds_bigarrays._sources import ArraySource, SourceError
from tfds_bigarrays._spec import FeatureSpec, SpecError
from tfds_bigarrays._version import __version__

_plugin.install()
_plugin.install_namespaces()

__all__ = [
    "ArrayDatasetBuilder",
    "ArraySource",
    "DatasetExistsError",
    "FeatureSpec",
    "Layout",
    "PlanError",
    "ReadOptions",
    "SourceError",
    "SpecError",
    "__version__",
    "build",
    "from_generator",
    "read_options",
]
