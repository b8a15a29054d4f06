"""Two checkouts of tfds_bigarrays read side by side, rounds alternating.

For a change to the read path: the same prepared datasets of
`read_throughput.py`, read by `read_throughput.py --child` of each checkout
(with that checkout first on PYTHONPATH, its native parts built in place:
`python setup.py build_ext --inplace` there), and by in-memory arrays, in
fresh processes taking turns. The table gives medians and each contender's
ratio to in-memory per round.

    git worktree add /tmp/base <commit> && (cd /tmp/base && ../.venv/bin/python setup.py build_ext --inplace)
    .venv/bin/python benchmarks/compare_checkouts.py --baseline /tmp/base --out docs/compare.md
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import run_child  # noqa: E402

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parent.parent


def run(checkout: pathlib.Path, contender: str, kind: str, work: pathlib.Path) -> dict:
    return run_child(
        str(checkout / "benchmarks" / "read_throughput.py"),
        "--contender", contender, "--kind", kind, "--src", str(work / kind),
        env={"PYTHONPATH": str(checkout)},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="the other checkout")
    parser.add_argument("--contenders", default="ours,ours-mapped")
    parser.add_argument("--kinds", default="small,image")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/tfds_bigarrays_bench")
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args()
    base, this, work = pathlib.Path(args.baseline), ROOT, pathlib.Path(args.workdir)
    label = {"small": "32 float32", "image": "64x64 float32"}
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}; command: `.venv/bin/python "
        f"benchmarks/compare_checkouts.py --baseline {base}` ({args.rounds} rounds, fresh "
        "processes taking turns, medians; datasets prepared by read_throughput.py).",
        "",
        "| rows | contender | baseline examples/s | this examples/s | baseline vs in-memory "
        "| this vs in-memory | this / baseline | CPU us/example, baseline / this |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for kind in args.kinds.split(","):
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.rounds):
            runs.setdefault(("in-memory", ""), []).append(run(this, "in-memory", kind, work))
            for contender in args.contenders.split(","):
                for name, checkout in (("baseline", base), ("this", this)):
                    runs.setdefault((contender, name), []).append(
                        run(checkout, contender, kind, work)
                    )
                    r = runs[(contender, name)][-1]
                    print(f"{kind} {contender} {name}: {r['examples_per_s']:,.0f} ex/s", flush=True)
        memory = statistics.median(r["examples_per_s"] for r in runs[("in-memory", "")])

        def med(key, field="examples_per_s", runs=runs):
            return statistics.median(r[field] for r in runs[key])

        for contender in args.contenders.split(","):
            b, t = med((contender, "baseline")), med((contender, "this"))
            cpu = f"{med((contender, 'baseline'), 'cpu_us_per_example'):.3f} / {med((contender, 'this'), 'cpu_us_per_example'):.3f}"
            lines.append(
                f"| {label.get(kind, kind)} | {contender} | {b:,.0f} | {t:,.0f} | "
                f"{b / memory:.2f}x | {t / memory:.2f}x | {t / b:.3f} | {cpu} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
