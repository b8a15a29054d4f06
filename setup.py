"""Builds the native parts; all metadata lives in setup.cfg.

- `tfds_bigarrays._read._core`: the read core (core.cc), a plain shared
  library loaded with ctypes: no Python or TensorFlow in it.
- `tfds_bigarrays._read._op`: the TensorFlow ops over it (op.cc), compiled
  against the TensorFlow in the build environment (pinned in pyproject.toml
  and setup.cfg to the one installed beside it) by `_read/build.py`.
"""

import importlib.util
import pathlib

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

READ = pathlib.Path(__file__).parent / "tfds_bigarrays" / "_read"


def _op_builder():
    spec = importlib.util.spec_from_file_location("tfds_bigarrays_op_build", READ / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildNative(build_ext):
    def build_extension(self, ext):
        if ext.name != "tfds_bigarrays._read._op":
            return super().build_extension(ext)
        core = pathlib.Path(self.get_ext_fullpath("tfds_bigarrays._read._core"))
        _op_builder().build_op(out=pathlib.Path(self.get_ext_fullpath(ext.name)), core=core)


AUTOLOAD_PTH = "tfds_bigarrays-autoload.pth"


class BuildPy(build_py):
    """Also writes the .pth file that imports `tfds_bigarrays_autoload` at start-up.

    A .pth file must sit at the top of site-packages: in a wheel, beside the
    packages in build_lib; in an editable wheel, at the top of the wheel
    folder, which setuptools fills from install_data's folder's grandparent.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            data = self.get_finalized_command("install_data").install_dir
            top = pathlib.Path(data).parent.parent
        else:
            top = pathlib.Path(self.build_lib)
        top.mkdir(parents=True, exist_ok=True)
        (top / AUTOLOAD_PTH).write_text("import tfds_bigarrays_autoload\n")


setup(
    cmdclass={"build_ext": BuildNative, "build_py": BuildPy},
    ext_modules=[
        Extension(
            "tfds_bigarrays._read._core",
            ["tfds_bigarrays/_read/core.cc"],
            depends=["tfds_bigarrays/_read/core.h"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17", "-Wall", "-fvisibility=hidden"],
            extra_link_args=[f"-Wl,-soname,{_op_builder().CORE_NAME}"],
        ),
        Extension(
            "tfds_bigarrays._read._op",
            ["tfds_bigarrays/_read/op.cc"],
            depends=["tfds_bigarrays/_read/core.h", "tfds_bigarrays/_read/build.py"],
        ),
    ],
)
