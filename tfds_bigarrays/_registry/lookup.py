"""Team registry: namespaces of published datasets, loadable as `ns:name`.

The registry is a TOML file shaped like TFDS's community registry::

    [team_a]
    paths = ["/shared/team_a/datasets"]   # data directories, first = publish target
    info = "Team A's arrays"

found through TFDS_BIGARRAYS_REGISTRY (one path, or several separated by
commas) or given explicitly. After `import tfds_bigarrays`,
`tfds.load("team_a:name")` and `tfds.load("team_a:name:1.0.0")` resolve
through it. Paths go through `etils.epath`, so nothing assumes a local disk.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from tfds_bigarrays import _env
from tfds_bigarrays._build.plan import VERSION
from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._files import user_path

ENV_REGISTRY = _env.REGISTRY.name
SHARDS_FILENAME = "shards.json"
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(TfdsBigarraysError, ValueError):
    """The registry file, a namespace, a dataset or a version is not usable."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Namespace:
    name: str
    paths: tuple[epath.Path, ...]
    info: str = ""


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3)
    if close:
        return f" Did you mean {', '.join(repr(c) for c in close)}?"
    return f" Known: {', '.join(sorted(choices)) or 'none'}."


def check_name(name: Any, *, what: str) -> str:
    """Namespaces and dataset names: no '/', '..', spaces, upper case."""
    if not isinstance(name, str) or not _NAMESPACE.fullmatch(name):
        raise RegistryError(
            f"{what}={name!r} is not valid: use lower-case letters, digits and '_', "
            "starting with a letter (no '/', '..' or spaces)."
        )
    return name


@dataclasses.dataclass(frozen=True, kw_only=True)
class Registry:
    """Namespaces read from one or more TOML files."""

    namespaces: Mapping[str, Namespace]
    files: tuple[str, ...] = ()  # where they were read from, for messages

    @classmethod
    def from_files(cls, files: Sequence[epath.PathLike]) -> Registry:
        namespaces: dict[str, Namespace] = {}
        for file in files:
            path = epath.Path(user_path(file))
            try:
                text = path.read_text()
            except OSError as e:
                raise RegistryError(f"Registry file {path} cannot be read: {e}.") from e
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                # The message carries "(at line L, column C)".
                raise RegistryError(f"Registry file {path} is not valid TOML: {e}.") from e
            for ns, table in data.items():
                check_name(ns, what=f"namespace in {path}")
                if not isinstance(table, dict) or not isinstance(table.get("paths"), list):
                    raise RegistryError(
                        f'{path}: [{ns}] needs paths = ["/data/dir", ...] (and optionally '
                        'info = "...").'
                    )
                if not table["paths"] or not all(
                    isinstance(p, str) and p and "\0" not in p for p in table["paths"]
                ):
                    raise RegistryError(
                        f"{path}: [{ns}] paths={table['paths']!r} must be a non-empty list "
                        "of non-empty directory paths (strings without NUL)."
                    )
                if ns in namespaces:
                    raise RegistryError(f"Namespace {ns!r} is defined twice ({path}).")
                namespaces[ns] = Namespace(
                    name=ns,
                    paths=tuple(_resolve(p, registry_file=path) for p in table["paths"]),
                    info=str(table.get("info", "")),
                )
        return cls(namespaces=namespaces, files=tuple(os.fspath(user_path(f)) for f in files))

    @classmethod
    def from_env(cls) -> Registry:
        return cls.from_files(_env.get(_env.REGISTRY))

    def where(self) -> str:
        """The registry files, or how to name one, for messages."""
        if self.files:
            return "registry file " + ", ".join(self.files)
        return (
            "no registry file (name one: --registry FILE on the command line, "
            f"{ENV_REGISTRY}=FILE in the environment; docs/registry.md)"
        )

    def namespace(self, name: str) -> Namespace:
        check_name(name, what="namespace")
        if name not in self.namespaces:
            raise RegistryError(
                f"Unknown namespace {name!r} in {self.where()}.{_suggest(name, list(self.namespaces))}"
            )
        return self.namespaces[name]

    def datasets(self, namespace: str) -> dict[str, list[str]]:
        """Dataset name -> sorted versions, over all of the namespace's paths."""
        out: dict[str, set[str]] = {}
        for root in self.namespace(namespace).paths:
            if not root.exists():
                continue
            for ds in root.iterdir():
                if not ds.is_dir() or not _NAMESPACE.fullmatch(ds.name):
                    continue
                for v in ds.iterdir():
                    if VERSION.fullmatch(v.name) and (v / "dataset_info.json").exists():
                        out.setdefault(ds.name, set()).add(v.name)
        return {k: sorted(v, key=_version_key) for k, v in sorted(out.items())}

    def dataset_dir(self, namespace: str, name: str, version: str | None = None) -> epath.Path:
        """The directory of `namespace:name[:version]` (latest version by default)."""
        check_name(name, what="dataset name")
        found = self.datasets(namespace)
        if name not in found:
            raise RegistryError(
                f"Namespace {namespace!r} has no dataset {name!r}.{_suggest(name, list(found))}"
            )
        versions = found[name]
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise RegistryError(
                f"{namespace}:{name} has no version {version!r}; it has {versions}."
            )
        for root in self.namespace(namespace).paths:
            candidate = root / name / version
            if (candidate / "dataset_info.json").exists():
                return candidate
        raise RegistryError(f"{namespace}:{name}:{version} vanished while looking it up.")


def _resolve(text: str, *, registry_file: epath.Path) -> epath.Path:
    """`~` expanded; a relative path taken from the registry file's folder."""
    if "://" in text:
        return epath.Path(text)
    path = user_path(text)
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(os.fspath(registry_file))), path)
    return epath.Path(path)


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


@functools.lru_cache(maxsize=1)
def _env_registry(value: str) -> Registry:
    return Registry.from_files(_env.REGISTRY.parse(value))


def env_registry() -> Registry:
    return _env_registry(os.environ.get(ENV_REGISTRY, ""))
