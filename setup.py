"""Builds the one C extension; all metadata lives in setup.cfg."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tfds_bigarrays._native",
            ["tfds_bigarrays/_native.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall"],
            depends=["tfds_bigarrays/_readcore.h"],
        )
    ]
)
