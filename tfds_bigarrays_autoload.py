"""Activates tfds_bigarrays wherever `tensorflow_datasets` is imported.

Installed with the package, `tfds_bigarrays-autoload.pth` imports this module
at interpreter start-up. It only adds an import finder: nothing is imported
until the program imports `tensorflow_datasets`, and then `tfds_bigarrays` is
imported right after it. So `tfds.load` and `tfds.data_source` of our
datasets take the fast path even in a script that forgot `import
tfds_bigarrays` (without it TFDS's own reader is about 70x slower on small
rows), and so do subprocesses: tf.data service workers, Beam workers.

This module lives outside the package: importing the package imports
TensorFlow Datasets, which must not happen at start-up.
TFDS_BIGARRAYS_AUTOLOAD=0 turns it off (declared in tfds_bigarrays/_env.py).
"""

from __future__ import annotations

import os
import sys

_TARGET = "tensorflow_datasets"
VARIABLE = "TFDS_BIGARRAYS_AUTOLOAD"


# No importlib.abc (it costs 7 ms at every start-up): the protocols are duck-typed.
class _Loader:
    """Runs the real loader, then imports tfds_bigarrays."""

    def __init__(self, real) -> None:  # an importlib Loader
        self._real = real

    def create_module(self, spec):
        return self._real.create_module(spec)

    def exec_module(self, module) -> None:
        self._real.exec_module(module)
        try:
            import tfds_bigarrays  # noqa: F401
        except Exception as e:  # a broken plugin must not break TFDS itself
            import warnings

            warnings.warn(
                f"tfds_bigarrays could not be activated ({type(e).__name__}: {e}); "
                "tfds.load reads its datasets with TFDS's slower reader. "
                f"Set {VARIABLE}=0 to silence this.",
                stacklevel=2,
            )

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self._real, name)


class _Finder:
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET or "tfds_bigarrays" in sys.modules:
            return None
        sys.meta_path.remove(self)  # once: the other finders locate TFDS
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec

    def invalidate_caches(self) -> None:
        pass


def install() -> None:
    """Adds the finder unless turned off, TFDS is already imported, or it is there."""
    if os.environ.get(VARIABLE) == "0":
        return
    if _TARGET in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())


install()
