"""Type stub of the C extension `_native.c` (see its source for the details)."""

from typing import Any

Buffer = Any  # anything with the buffer protocol (numpy arrays here)

HARDWARE_CRC: int  # 0 table-driven, 1 CRC32 instruction, 2 also AVX-512 folding

def crc32c_rows(
    data: Buffer, out: Buffer, stride: int, start: int, length: int, software: int = ...
) -> None: ...
def read_frames(
    fds: Buffer,
    offsets: Buffer,
    counts: Buffer,
    frame_bytes: int,
    segs: Buffer,
    outputs: tuple[Buffer, ...],
    dest: Buffer,
    junk: Buffer,
    crcs: Buffer | None,
    software: int = ...,  # 0 best, 1 (True) table, 2 no folding
    maps: tuple[Buffer, ...] | None = ...,
    /,
) -> None: ...
def feistel(indices: Buffer, out: Buffer, n: int, half_bits: int, keys: Buffer, /) -> None: ...
def advise(fds: Buffer, offsets: Buffer, lengths: Buffer, /) -> None: ...
def row_order(seed: int, group: int, out: Buffer, /) -> None: ...
