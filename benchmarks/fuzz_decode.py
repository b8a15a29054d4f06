"""Coverage-guided fuzzing of the pure-numpy decode path (atheris / libFuzzer).

The longer run behind tests/test_fuzz.py. Each input chooses a record layout
(1-3 features of any supported dtype and a small shape), rows for it, and a
mutation of the framed bytes (flip, zero, overwrite, the same flip in two
records, truncate, append, insert, delete); `unframe` + `RecordCodec.decode`
must then raise `RecordError` or return exactly the original values (after a
count check, which every reader makes), and the read core's checks of whole
frames (`core.decode`: headers, layout, CRCs) must flag any same-length
damage. Raw fuzzer bytes also go straight to `unframe` and `decode`. Any other exception, or a wrong value, stops the run with a
non-zero exit and the crashing input saved by libFuzzer.

atheris is not a dependency of tfds_bigarrays; install it for this script:

    pip install atheris

Run (prints the cases done; libFuzzer also reports "Done N runs in S s"):

    python benchmarks/fuzz_decode.py -runs=2000000
    python benchmarks/fuzz_decode.py -max_total_time=600

Its figures are in docs/reliability.md.
"""

from __future__ import annotations

import sys
import time

import atheris

with atheris.instrument_imports():
    import numpy as np

    from tfds_bigarrays._format.records import RecordCodec, RecordError, unframe
    from tfds_bigarrays._format.spec import SUPPORTED_DTYPES, FeatureSpec
    from tfds_bigarrays._read import core

_NAMES = "abcdxyz"
_KINDS = (
    "flip",
    "zero",
    "overwrite",
    "same_flip_in_two_records",
    "truncate",
    "append",
    "insert",
    "delete",
    "none",
)
_count = 0
_start = time.perf_counter()


def _codec(fdp: atheris.FuzzedDataProvider) -> RecordCodec:
    specs = {}
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        name = _NAMES[fdp.ConsumeIntInRange(0, len(_NAMES) - 1)]
        dtype = SUPPORTED_DTYPES[fdp.ConsumeIntInRange(0, len(SUPPORTED_DTYPES) - 1)]
        shape = tuple(fdp.ConsumeIntInRange(0, 3) for _ in range(fdp.ConsumeIntInRange(0, 2)))
        specs[name] = FeatureSpec(dtype=dtype, shape=shape)
    return RecordCodec(specs)


def _columns(fdp: atheris.FuzzedDataProvider, codec: RecordCodec, rows: int) -> dict:
    out = {}
    for name, spec in codec.specs.items():
        nbytes = rows * spec.row_bytes
        raw = fdp.ConsumeBytes(nbytes).ljust(nbytes, b"\0")
        values = np.frombuffer(raw, np.uint8).view(spec.dtype).reshape((rows, *spec.shape))
        if spec.dtype == np.bool_:
            values = values.view(np.uint8) % 2 == 1
        out[name] = values
    return out


def _mutate(fdp: atheris.FuzzedDataProvider, data: bytes, *, record: int) -> bytes:
    out = bytearray(data)
    kind = _KINDS[fdp.ConsumeIntInRange(0, len(_KINDS) - 1)]
    i = fdp.ConsumeIntInRange(0, max(0, len(out) - 1))
    if kind == "flip" and out:
        out[i] ^= fdp.ConsumeIntInRange(1, 255)
    elif kind == "same_flip_in_two_records" and out:
        xor = fdp.ConsumeIntInRange(1, 255)
        j = i + record * fdp.ConsumeIntInRange(1, 5)
        out[i] ^= xor
        if j < len(out):
            out[j] ^= xor
    elif kind == "zero":
        span = fdp.ConsumeIntInRange(1, 64)
        out[i : i + span] = bytes(len(out[i : i + span]))
    elif kind == "overwrite":
        extra = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 40))
        out[i : i + len(extra)] = extra
    elif kind == "truncate":
        del out[i:]
    elif kind == "append":
        out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 40))
    elif kind == "insert":
        out[i:i] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 40))
    elif kind == "delete":
        del out[i : i + fdp.ConsumeIntInRange(1, 64)]
    return bytes(out)


def _same(got: dict, want: dict) -> bool:
    return set(got) == set(want) and all(
        got[k].shape == want[k].shape and got[k].tobytes() == want[k].tobytes() for k in want
    )


def test_one_input(data: bytes) -> None:
    global _count
    _count += 1
    if _count % 100_000 == 0:
        print(f"cases: {_count} in {time.perf_counter() - _start:.0f} s", flush=True)
    fdp = atheris.FuzzedDataProvider(data)
    codec = _codec(fdp)
    rows = fdp.ConsumeIntInRange(1, 6)
    columns = _columns(fdp, codec, rows)
    framed = codec.frame(codec.encode(columns))
    damaged = _mutate(fdp, framed, record=codec.frame_bytes)
    try:
        records = unframe(damaged)
        got = codec.decode(np.frombuffer(b"".join(records), np.uint8))
    except RecordError:
        pass
    else:
        if len(records) == rows:
            if damaged != framed or not _same(got, columns):
                raise AssertionError(f"damage went unnoticed: {damaged!r} vs {framed!r}")
    if len(damaged) == len(framed):
        # The read core's checks of whole frames: headers, layout, CRCs.
        try:
            got = core.decode(codec, [damaged], ["fuzzed"])
        except core.ShardReadError:
            pass
        else:
            if damaged != framed or not _same(got, columns):
                raise AssertionError(f"the read core missed damage: {damaged!r} vs {framed!r}")
    # The rest of the input, raw, into both functions.
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        unframe(rest)
    except RecordError:
        pass
    try:
        decoded = codec.decode(np.frombuffer(rest, np.uint8))
    except RecordError:
        return
    # Accepted without a CRC: must be exactly what encoding those values gives.
    if codec.encode(decoded).tobytes() != rest:
        raise AssertionError(f"decode accepted bytes it would not write: {rest!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    print("fuzzing unframe + RecordCodec.decode; Ctrl-C or -runs=N / -max_total_time=S to stop")
    atheris.Fuzz()


if __name__ == "__main__":
    main()
