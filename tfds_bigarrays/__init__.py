"""tfds_bigarrays: NumPy arrays bigger than RAM as TFDS datasets.

Importing this package wraps TFDS functions and registers nothing else:
TFDS's read-only builder, so that `tfds.load` of a dataset built here uses
our read path and `tfds.data_source` our data source, and `tfds.builder`, so
that `tfds.load("team:name")` finds datasets through the team registry. It does not initialize TensorFlow
devices. Implementation lives in private folders by concern (`_format`,
`_build`, `_read`, `_registry`, `_cli`; see docs/design.md).
"""

from tfds_bigarrays._build.api import DatasetExistsError, build
from tfds_bigarrays._build.builder import ArrayDatasetBuilder
from tfds_bigarrays._build.generator import from_generator
from tfds_bigarrays._build.plan import PlanError
from tfds_bigarrays._build.sources import ArraySource, SourceError
from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._format.layout import Layout
from tfds_bigarrays._format.spec import FeatureSpec, SpecError
from tfds_bigarrays._read import hooks as _read_hooks
from tfds_bigarrays._read.options import ReadOptions, read_options
from tfds_bigarrays._read.source import ArraysDataSource, data_source
from tfds_bigarrays._registry import hooks as _registry_hooks
from tfds_bigarrays._version import __version__

_read_hooks.install()
_registry_hooks.install()

__all__ = [
    "ArrayDatasetBuilder",
    "ArraySource",
    "ArraysDataSource",
    "DatasetExistsError",
    "FeatureSpec",
    "Layout",
    "PlanError",
    "ReadOptions",
    "SourceError",
    "SpecError",
    "TfdsBigarraysError",
    "__version__",
    "build",
    "data_source",
    "from_generator",
    "read_options",
]
