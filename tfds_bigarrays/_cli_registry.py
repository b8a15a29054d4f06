"""`tfds-bigarrays publish | verify | inspect | ls | new`."""

from __future__ import annotations

import re

from etils import epath

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def _registry(args):
    from tfds_bigarrays import _registry

    if args.registry:
        return _registry.Registry.from_files([f.strip() for f in args.registry.split(",")])
    return _registry.Registry.from_env()


def _latest(root: epath.Path, name: str) -> epath.Path:
    from tfds_bigarrays._cli import UsageError

    versions = (
        sorted(
            (v for v in (root / name).iterdir() if _VERSION.fullmatch(v.name)),
            key=lambda v: tuple(int(p) for p in v.name.split(".")),
        )
        if (root / name).exists()
        else []
    )
    if not versions:
        raise UsageError(f"No built dataset {name!r} under {root}.")
    return versions[-1]


def resolve(args) -> epath.Path:
    """NAME (with --data-dir) or NAMESPACE:NAME[:VERSION] -> dataset directory."""
    from tfds_bigarrays._cli import UsageError
    from tfds_bigarrays._registry import check_name

    if args.version and not _VERSION.fullmatch(args.version):
        raise UsageError(f"--version {args.version!r} must look like 1.0.0 (major.minor.patch).")
    parts = args.dataset.split(":")
    if len(parts) >= 2:
        version = parts[2] if len(parts) > 2 else args.version
        return _registry(args).dataset_dir(parts[0], parts[1], version)
    check_name(args.dataset, what="dataset name")
    if not args.data_dir:
        raise UsageError(f"{args.dataset!r}: give --data-dir DIR, or write NAMESPACE:NAME.")
    root = epath.Path(args.data_dir).expanduser()
    if args.version:
        path = root / args.dataset / args.version
        if not (path / "dataset_info.json").exists():
            raise UsageError(f"No version {args.version} of {args.dataset!r} under {root}.")
        return path
    return _latest(root, args.dataset)


def _common(p, *, registry=True) -> None:
    p.add_argument("--data-dir", help="TFDS data directory holding the dataset")
    p.add_argument("--version", help="dataset version (default: the latest)")
    if registry:
        p.add_argument(
            "--registry",
            help="registry TOML file(s), comma-separated (default: $TFDS_BIGARRAYS_REGISTRY)",
        )


def add_parsers(sub) -> None:
    p = sub.add_parser("publish", help="Copy a built version into a team namespace.")
    p.add_argument("dataset", metavar="NAME")
    p.add_argument("--to", required=True, metavar="NAMESPACE")
    _common(p)
    p.set_defaults(func=_publish)

    p = sub.add_parser("verify", help="Re-hash and re-read every shard of a dataset.")
    p.add_argument("dataset", metavar="NAME|NAMESPACE:NAME")
    _common(p)
    p.set_defaults(func=_verify)

    p = sub.add_parser("inspect", help="Splits, counts, sizes, specs and provenance.")
    p.add_argument("dataset", metavar="NAME|NAMESPACE:NAME")
    _common(p)
    p.set_defaults(func=_inspect)

    p = sub.add_parser("ls", help="List namespaces, or a namespace's datasets and versions.")
    p.add_argument("namespace", nargs="?")
    p.add_argument("--registry", help="registry TOML file(s) (default: $TFDS_BIGARRAYS_REGISTRY)")
    p.set_defaults(func=_ls)

    p = sub.add_parser("new", help="Write a dataset folder in the TFDS template layout.")
    p.add_argument("name")
    p.add_argument("--dir", default=".", help="parent folder (default: .)")
    p.set_defaults(func=_new)


def _publish(args) -> int:
    from tfds_bigarrays._registry import publish

    source = resolve(args)
    target = publish(source, registry=_registry(args), namespace=args.to)
    print(f"Published {source} as {args.to}:{target.parent.name}:{target.name} at {target}")
    return 0


def _verify(args) -> int:
    from tfds_bigarrays._verify import verify

    reports = verify(resolve(args))
    bad = [r for r in reports if r.problem]
    for r in reports:
        status = "BAD " + r.problem if r.problem else "ok"
        print(f"{r.split:12s} {epath.Path(r.path).name}: {r.examples} examples, {status}")
    total = sum(r.examples for r in reports if not r.problem)
    print(f"{len(reports) - len(bad)}/{len(reports)} shards ok, {total} examples re-counted")
    if bad:
        names = ", ".join(epath.Path(r.path).name for r in bad)
        print(f"tfds-bigarrays verify: error: bad shard(s): {names}", flush=True)
        return 1
    return 0


def _inspect(args) -> int:
    from tfds_bigarrays._verify import describe

    print(describe(resolve(args)))
    return 0


def _ls(args) -> int:
    registry = _registry(args)
    if args.namespace:
        for name, versions in registry.datasets(args.namespace).items():
            print(f"{args.namespace}:{name}  {', '.join(versions)}")
        return 0
    for ns in sorted(registry.namespaces.values(), key=lambda n: n.name):
        count = len(registry.datasets(ns.name))
        print(f"{ns.name}  {count} dataset(s)  {ns.info}  [{', '.join(map(str, ns.paths))}]")
    return 0


def _new(args) -> int:
    from tfds_bigarrays._template import write_template

    folder = write_template(args.name, parent=args.dir)
    print(f"Wrote {folder}. Test it with: python -m pytest {folder}")
    print(f"Build it with: tfds build {folder} --manual_dir {folder}/dummy_data")
    return 0
