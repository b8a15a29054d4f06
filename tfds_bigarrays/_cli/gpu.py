"""`tfds-bigarrays gpu run`: several trainings on one GPU, with planned caps."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from tfds_bigarrays._cli.common import subcommand

    gpu = subcommand(
        sub,
        "gpu",
        help="GPU memory tools (several models on one GPU).",
        examples=["tfds-bigarrays gpu run --models 4 -- python train.py"],
    )
    gpu_sub = gpu.add_subparsers(dest="gpu_command", required=True, metavar="{run}")
    p = subcommand(
        gpu_sub,
        "run",
        help="Run N trainings side by side on one GPU, each under a planned memory cap.",
        description=(
            "Run commands side by side, each under a GPU memory cap. Python commands run "
            "under `python -m tfds_bigarrays.gpu` (the cap applies to unmodified scripts); "
            "others get TFDS_BIGARRAYS_GPU_MEMORY_MB. Separate several commands with ---."
        ),
        examples=[
            "tfds-bigarrays gpu run --models 4 -- python train.py --lr 0.1",
            "tfds-bigarrays gpu run -- python a.py --- python b.py",
            "tfds-bigarrays gpu run --memory-limit 4096 --models 2 -- ./train.sh",
        ],
    )
    p.add_argument("--models", type=int, help="copies of a single command to run")
    p.add_argument("--memory-limit", type=int, metavar="MB", help="cap per process (else planned)")
    p.add_argument("--card-mb", type=int, help="card memory (default: read from the GPU)")
    p.add_argument(
        "--overhead-mb",
        type=int,
        help="per-process memory beyond the cap (CUDA context; default 1024)",
    )
    p.add_argument("--device", type=int, default=0, help="GPU index (default 0)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS] [--- CMD ...]")
    p.set_defaults(func=_run)


def split_commands(words: list[str]) -> list[list[str]]:
    from tfds_bigarrays._cli.common import UsageError

    if words and words[0] == "--":
        words = words[1:]
    commands: list[list[str]] = [[]]
    for word in words:
        if word == "---":
            commands.append([])
        else:
            commands[-1].append(word)
    if not all(commands):
        raise UsageError(
            "gpu run: give a command after --, and separate several with ---, "
            "e.g. gpu run -- python a.py --- python b.py"
        )
    return commands


def _run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._cli.common import UsageError
    from tfds_bigarrays.gpu._plan import DEFAULT_OVERHEAD_MB, plan
    from tfds_bigarrays.gpu._run import run_many

    commands = split_commands(args.command)
    if args.models is not None:
        if len(commands) > 1 and args.models != len(commands):
            raise UsageError(f"--models {args.models} but {len(commands)} commands were given.")
        if args.models < 1:
            raise UsageError(f"--models {args.models} must be >= 1.")
        commands = commands * (args.models if len(commands) == 1 else 1)
    if args.memory_limit is not None:
        if args.memory_limit < 1:
            raise UsageError(
                f"--memory-limit {args.memory_limit} must be a positive number of MB, "
                "e.g. 2048 (or leave it out to plan the caps from the card's memory)."
            )
        cap = args.memory_limit
        print(f"gpu run: {len(commands)} process(es), cap {cap} MB each (given)")
    else:
        try:
            p = plan(
                len(commands),
                card_mb=args.card_mb,
                overhead_mb=DEFAULT_OVERHEAD_MB if args.overhead_mb is None else args.overhead_mb,
                device=args.device,
            )
        except ValueError as e:
            raise UsageError(f"gpu run: {e}") from e
        cap = p.cap_mb
        print(
            f"gpu run: {p.models} process(es) on a {p.card_mb} MB card: cap {p.cap_mb} MB "
            f"each + {p.overhead_mb} MB overhead = {p.total_mb} MB"
        )
    results = run_many(commands, cap_mb=cap)
    print("\n| # | exit | peak TF GPU memory | command |\n|---|---:|---|---|")
    for r in results:
        peaks = [
            f"{name.rsplit(':', 2)[-2]}:{name.rsplit(':', 1)[-1]} {b / 2**20:.0f} MB"
            for name, b in r.peak_bytes.items()
            if b is not None
        ]
        print(
            f"| {r.index} | {r.returncode} | {', '.join(peaks) or 'n/a (no GPU)'} | "
            f"{' '.join(r.command)} |"
        )
    failed = [r for r in results if r.returncode != 0]
    return failed[0].returncode if failed else 0
