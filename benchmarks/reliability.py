"""Reliability report: runs the fault, bad-input, security and fuzz tests and
writes what they tried and survived as tables (docs/reliability.md and the
README's "Reliability" section, between its markers). Never typed by hand.

    .venv/bin/python benchmarks/reliability.py                       # as in CI
    .venv/bin/python benchmarks/reliability.py --fuzz-examples 2000 \\
        --atheris-seconds 600                                         # longer run

The counts come from pytest's JUnit XML (one row per test case, so every
parametrized bad input is one case) and from Hypothesis's statistics (fuzz
examples actually run); the atheris run, when asked for and installed,
reports libFuzzer's own "Done N runs".
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parent.parent
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"

# (test file, test function prefix) -> (section, what it tries)
GROUPS: list[tuple[str, str, str, str]] = [
    ("test_faults.py", "test_kill_9_at_each_stage", "faults", "build killed (SIGKILL), then rerun"),
    ("build/test_atomic.py", "", "faults", "build killed (SIGKILL), then rerun"),
    ("test_faults.py", "test_disk_full", "faults", "disk full during a build (real tmpfs)"),
    ("test_faults.py", "test_damaged_shard", "faults", "shard truncated/deleted/flipped/appended"),
    (
        "read/test_pipeline.py",
        "test_truncated_or_deleted",
        "faults",
        "shard truncated/deleted/flipped/appended",
    ),
    (
        "read/test_pipeline.py",
        "test_flipped_byte",
        "faults",
        "shard truncated/deleted/flipped/appended",
    ),
    ("test_faults.py", "test_publish_killed", "faults", "publish killed (SIGKILL), then rerun"),
    ("test_faults.py", "test_two_builds", "faults", "two builds of one name at once"),
    (
        "test_faults.py",
        "test_readers_keep",
        "faults",
        "3 reader processes while a version is published",
    ),
    (
        "build/test_dask.py",
        "test_worker_killed",
        "faults",
        "Dask worker killed mid-shard (retry / fail + rerun)",
    ),
    (
        "read/test_data_service.py",
        "test_a_corrupt_shard",
        "faults",
        "damaged shard read through tf.data service",
    ),
    (
        "registry/test_registry.py",
        "test_cli_publish_verify",
        "faults",
        "published shard changed, found by verify",
    ),
    ("test_bad_input.py", "test_build_", "bad input", "Python API: tfds_bigarrays.build()"),
    (
        "test_bad_input.py",
        "test_unusual_but_valid",
        "bad input",
        "Python API: unusual valid arrays round-trip",
    ),
    ("test_bad_input.py", "test_builder_", "bad input", "builder class attributes"),
    ("test_bad_input.py", "test_cli_", "bad input", "CLI flags and arguments"),
    ("cli/test_cli.py", "test_bad_input", "bad input", "CLI flags and arguments"),
    ("test_bad_input.py", "test_registry_", "bad input", "registry TOML and lookups"),
    ("test_bad_input.py", "test_gpu_", "bad input", "GPU module (functions, env vars)"),
    ("test_security.py", "", "security", "no unpickling, no escaping paths, nothing executed"),
    ("test_fuzz.py", "", "fuzz", "decode path: random and mutated records"),
]
FILES = sorted({g[0] for g in GROUPS})


def _group(file: str, name: str) -> tuple[str, str] | None:
    for f, prefix, section, label in GROUPS:
        if f.rsplit("/", 1)[-1] == file and name.startswith(prefix):
            return section, label
    return None


def run_tests(fuzz_examples: int) -> tuple[list[dict], dict[str, int], float]:
    """Runs the suites; returns test cases, fuzz examples per test, seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = pathlib.Path(tmp) / "junit.xml"
        env = {**os.environ, "TFDS_BIGARRAYS_FUZZ_EXAMPLES": str(fuzz_examples)}
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", *[f"tests/{f}" for f in FILES], "-q",
             "-p", "no:cacheprovider", f"--junitxml={xml}", "--hypothesis-show-statistics"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if not xml.exists():
            sys.exit(f"pytest did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        cases = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            file = case.get("classname", "").split(".")[-1] + ".py"
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = {"failure": "failed", "error": "failed", "skipped": "skipped"}[tag]
            cases.append({"file": file, "name": case.get("name", ""), "outcome": outcome})
    return cases, _hypothesis_examples(proc.stdout), seconds


def _hypothesis_examples(output: str) -> dict[str, int]:
    """Examples run per test, from --hypothesis-show-statistics."""
    found: dict[str, int] = collections.Counter()
    current = None
    for line in output.splitlines():
        header = re.match(r"^(\S+\.py)::(\S+):\s*$", line.strip())
        if header:
            current = header.group(2)
            continue
        m = re.search(r"- (\d+) passing, (\d+) failing", line)
        if m and current:
            found[current] += int(m.group(1)) + int(m.group(2))
    return dict(found)


def run_atheris(seconds: int) -> str:
    proc = subprocess.run(
        [sys.executable, str(HERE.parent / "fuzz_decode.py"), f"-max_total_time={seconds}",
         "-print_final_stats=1"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    if "No module named 'atheris'" in text:
        return "atheris not installed (pip install atheris); not run"
    done = re.search(r"Done (\d+) runs in (\d+) second", text)
    status = "no crash, no wrong value" if proc.returncode == 0 else "FAILED (see its output)"
    if not done:
        return f"atheris run ended with exit {proc.returncode}: {text[-300:]!r}"
    return f"atheris: {int(done.group(1)):,} runs in {done.group(2)} s, {status}"


def report(cases, examples, seconds, atheris: str | None, fuzz_examples: int) -> str:
    rows: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for case in cases:
        group = _group(case["file"], case["name"])
        if group is not None:
            rows[group][case["outcome"]] += 1
    fuzz_cases = sum(examples.values())
    counted = sum(sum(c.values()) for c in rows.values())
    lines = [
        f"Generated {time.strftime('%Y-%m-%d')} by `.venv/bin/python benchmarks/reliability.py"
        f"{'' if fuzz_examples == 50 else f' --fuzz-examples {fuzz_examples}'}` "
        f"({counted} of the {len(cases)} test cases of these files, run in {seconds:.0f} s; each "
        "counted case asserts nothing was lost or silently wrong: a clear error naming the "
        "argument or shard and nothing left behind, or exactly the original data).",
        "",
        "| kind | what is tried | cases | passed | failed | skipped |",
        "|---|---|---:|---:|---:|---:|",
    ]
    order = ["faults", "bad input", "security", "fuzz"]
    for (section, label), counts in sorted(rows.items(), key=lambda kv: order.index(kv[0][0])):
        total = sum(counts.values())
        lines.append(
            f"| {section} | {label} | {total} | {counts['passed']} | {counts['failed']} | "
            f"{counts['skipped']} |"
        )
    lines += [
        "",
        f"- Fuzz examples run by Hypothesis in these tests: {fuzz_cases:,} "
        f"(TFDS_BIGARRAYS_FUZZ_EXAMPLES={fuzz_examples} per property; the TF read-path "
        "properties run a fifth of that).",
    ]
    if atheris:
        lines.append(f"- Longer run, `benchmarks/fuzz_decode.py`: {atheris}.")
    failed = sum(c["outcome"] == "failed" for c in cases)
    lines.append(f"- Failures among all {len(cases)} test cases run: {failed}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuzz-examples", type=int, default=50)
    parser.add_argument("--atheris-seconds", type=int, default=0)
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args()
    cases, examples, seconds = run_tests(args.fuzz_examples)
    atheris = run_atheris(args.atheris_seconds) if args.atheris_seconds else None
    text = report(cases, examples, seconds, atheris, args.fuzz_examples)
    docs = pathlib.Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "reliability.md").write_text(text)
    readme = pathlib.Path(args.readme)
    content = readme.read_text()
    if START in content and END in content:
        head, rest = content.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{START}\n{text}{END}{tail}")
    print(text)
    if "failed" in {c["outcome"] for c in cases}:
        sys.exit(1)


if __name__ == "__main__":
    main()
