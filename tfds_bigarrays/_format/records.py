"""Record encoding: arrays to serialized `tf.train.Example` records, in numpy.

Every record of a dataset has the same layout: a `tf.train.Example` with one
entry per feature (sorted by name), each holding the raw little-endian bytes
of one example in a `bytes_list`, exactly as `tfds.features.Tensor(...,
encoding='bytes')` stores them. Stock TFDS therefore decodes our shards with
no code of ours.

The one exception is uint32: `tf.io.decode_raw` has no uint32 kernel, so stock
TFDS can only read it from an `int64_list`. We write those varints at a fixed
width of five bytes (protobuf parsers accept over-long varints), which keeps
every record of a dataset the same length.

Because the layout is constant, a block of rows is encoded by filling columns
of one uint8 matrix: no per-row Python, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import google_crc32c
import numpy as np

from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._format.spec import FeatureSpec

BYTES = "bytes"
INT64 = "int64"
_UINT32_VARINT_WIDTH = 5
_FRAME_OVERHEAD = 16  # uint64 length + masked crc of it + masked crc of data


class RecordError(TfdsBigarraysError, ValueError):
    """A record does not match the layout its dataset declares."""


def varint(value: int) -> bytes:
    """Minimal protobuf varint of a non-negative int."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(field: int, body_len: int) -> bytes:
    """Tag and length of a length-delimited protobuf field."""
    return varint((field << 3) | 2) + varint(body_len)


def feature_encoding(spec: FeatureSpec) -> str:
    """How a feature is stored: raw `bytes`, or an `int64` list (uint32 only)."""
    return INT64 if spec.dtype == np.dtype("uint32") else BYTES


@dataclasses.dataclass(frozen=True)
class Field:
    """A byte range of every record: constant bytes, or one feature's values."""

    start: int
    length: int
    feature: str | None  # None: bytes every record holds
    constant: bytes = b""


@dataclasses.dataclass(frozen=True)
class _Slot:
    name: str
    start: int
    stop: int
    spec: FeatureSpec
    encoding: str


class RecordCodec:
    """Encodes and decodes blocks of examples with a fixed record layout."""

    def __init__(self, specs: Mapping[str, FeatureSpec]):
        if not specs:
            raise RecordError("A record needs at least one feature (got specs={}).")
        self.specs = dict(sorted(specs.items()))
        pieces: list[bytes | tuple[str, int]] = []
        features_body_len = 0
        entries = []
        for name, spec in self.specs.items():
            encoding = feature_encoding(spec)
            if encoding == BYTES:
                payload_len = spec.row_bytes
                # BytesList{ value: payload }
                inner = _len_field(1, payload_len)
                list_field = 1
            else:
                payload_len = spec.num_elements * _UINT32_VARINT_WIDTH
                # Int64List{ packed value }
                inner = _len_field(1, payload_len)
                list_field = 3
            list_len = len(inner) + payload_len
            feature_head = _len_field(list_field, list_len)  # Feature{...}
            feature_len = len(feature_head) + list_len
            key = name.encode()
            entry_head = _len_field(1, len(key)) + key + _len_field(2, feature_len)
            entry_len = len(entry_head) + feature_len
            entry_prefix = _len_field(1, entry_len) + entry_head + feature_head + inner
            entries.append((name, entry_prefix, payload_len))
            features_body_len += len(entry_prefix) + payload_len
        pieces.append(_len_field(1, features_body_len))  # Example{ features }
        for name, prefix, payload_len in entries:
            pieces.append(prefix)
            pieces.append((name, payload_len))

        self._constants: list[tuple[int, np.ndarray]] = []
        slots = {}
        offset = 0
        for piece in pieces:
            if isinstance(piece, bytes):
                self._constants.append((offset, np.frombuffer(piece, np.uint8)))
                offset += len(piece)
            else:
                name, length = piece
                spec = self.specs[name]
                slots[name] = _Slot(name, offset, offset + length, spec, feature_encoding(spec))
                offset += length
        self.slots: dict[str, _Slot] = slots
        self.record_bytes = offset
        self.frame_bytes = offset + _FRAME_OVERHEAD
        self._frame_header = np.frombuffer(
            np.uint64(self.record_bytes).tobytes()
            + _masked_crc(np.uint64(self.record_bytes).tobytes()).tobytes(),
            np.uint8,
        )

    def fields(self) -> list[Field]:
        """The record's byte ranges, front to back, covering it exactly."""
        out = [Field(start, len(c), None, c.tobytes()) for start, c in self._constants]
        out += [Field(s.start, s.stop - s.start, name) for name, s in self.slots.items()]
        return sorted(out, key=lambda f: (f.start, f.length > 0))

    def encode(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Encodes a block of examples.

        Args:
          columns: For each feature, an array of shape `(n, *spec.shape)` of its
            spec's dtype (any byte order or memory layout).

        Returns:
          A `(n, record_bytes)` uint8 matrix, one serialized Example per row.
        """
        n = _block_length(columns, self.specs)
        out = np.empty((n, self.record_bytes), np.uint8)
        for start, constant in self._constants:
            out[:, start : start + len(constant)] = constant
        for name, slot in self.slots.items():
            values = np.ascontiguousarray(columns[name], dtype=slot.spec.dtype)
            # Explicit widths, not -1: a block may have no rows.
            values = values.reshape(n, slot.spec.num_elements)
            payload = values.view(np.uint8) if slot.encoding == BYTES else _fixed_varints(values)
            out[:, slot.start : slot.stop] = payload.reshape(n, slot.stop - slot.start)
        return out

    def frame(self, records: np.ndarray) -> bytes:
        """TFRecord framing of a `(n, record_bytes)` block: bytes to append."""
        n = records.shape[0]
        framed = np.empty((n, self.frame_bytes), np.uint8)
        framed[:, :12] = self._frame_header
        framed[:, 12 : 12 + self.record_bytes] = records
        crcs = np.fromiter((_masked_crc_int(row) for row in records), dtype="<u4", count=n)
        framed[:, 12 + self.record_bytes :] = crcs.view(np.uint8).reshape(n, 4)
        return framed.tobytes()

    def decode(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """Numpy twin of the TensorFlow decoder, for tests and tools."""
        records = np.asarray(records, np.uint8)
        if records.size % self.record_bytes:
            raise RecordError(
                f"Got {records.size} bytes of records, not a multiple of the dataset's "
                f"record length ({self.record_bytes} bytes): truncated or foreign data."
            )
        records = records.reshape(-1, self.record_bytes)
        n = records.shape[0]
        for start, constant in self._constants:
            if not np.array_equal(
                records[:, start : start + len(constant)],
                np.broadcast_to(constant, (n, len(constant))),
            ):
                raise RecordError(
                    "Record layout does not match the dataset's features "
                    f"(bytes {start}..{start + len(constant)} differ)."
                )
        out = {}
        for name, slot in self.slots.items():
            raw = np.ascontiguousarray(records[:, slot.start : slot.stop])
            if slot.encoding == BYTES:
                values = raw.view(slot.spec.dtype)
            else:
                values = _read_fixed_varints(raw, name=name).astype(np.uint32)
            out[name] = values.reshape((n, *slot.spec.shape))
        return out


def unframe(data: bytes) -> list[bytes]:
    """Splits TFRecord bytes into records, checking every length and crc."""
    records = []
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if pos + 12 > len(view):
            raise RecordError(f"Truncated record header at byte {pos}.")
        length = int(np.frombuffer(view[pos : pos + 8], "<u8")[0])
        if _masked_crc_int(view[pos : pos + 8]) != int(
            np.frombuffer(view[pos + 8 : pos + 12], "<u4")[0]
        ):
            raise RecordError(f"Corrupt record length at byte {pos}.")
        end = pos + 12 + length
        if end + 4 > len(view):
            raise RecordError(f"Truncated record at byte {pos}.")
        body = view[pos + 12 : end]
        if _masked_crc_int(body) != int(np.frombuffer(view[end : end + 4], "<u4")[0]):
            raise RecordError(f"Corrupt record (crc mismatch) at byte {pos}.")
        records.append(bytes(body))
        pos = end + 4
    return records


def _block_length(columns: Mapping[str, np.ndarray], specs: Mapping[str, FeatureSpec]) -> int:
    if set(columns) != set(specs):
        raise RecordError(f"Block has features {sorted(columns)}, expected {sorted(specs)}.")
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) != 1:
        raise RecordError(f"Block columns differ in length: {lengths}.")
    for name, col in columns.items():
        if tuple(col.shape[1:]) != specs[name].shape:
            raise RecordError(
                f"Feature {name!r}: rows of shape {tuple(col.shape[1:])}, "
                f"expected {specs[name].shape}."
            )
    return next(iter(lengths.values()))


def _fixed_varints(values: np.ndarray) -> np.ndarray:
    """uint32 values as 5-byte varints: (n, k) -> (n, 5k) uint8."""
    v = values.astype(np.uint64)
    out = np.empty((*values.shape, _UINT32_VARINT_WIDTH), np.uint8)
    for i in range(_UINT32_VARINT_WIDTH - 1):
        out[..., i] = ((v >> np.uint64(7 * i)) & np.uint64(0x7F)) | np.uint64(0x80)
    out[..., -1] = v >> np.uint64(28)
    return out.reshape(values.shape[0], values.shape[1] * _UINT32_VARINT_WIDTH)


def _read_fixed_varints(raw: np.ndarray, *, name: str) -> np.ndarray:
    groups = raw.reshape(raw.shape[0], raw.shape[1] // _UINT32_VARINT_WIDTH, _UINT32_VARINT_WIDTH)
    # What `_fixed_varints` writes: continuation bits on the first four bytes,
    # and a last byte of at most 4 bits. Anything else is not our record, and
    # decoding it anyway would wrap values silently.
    if not ((groups[..., :-1] & 0x80).all() and (groups[..., -1] < 0x10).all()):
        raise RecordError(
            f"Feature {name!r}: malformed fixed-width uint32 varints; the record is "
            "corrupt or from another dataset."
        )
    groups = groups.astype(np.uint64)
    value = np.zeros(groups.shape[:2], np.uint64)
    for i in range(_UINT32_VARINT_WIDTH):
        value |= (groups[..., i] & np.uint64(0x7F)) << np.uint64(7 * i)
    return value


_MASK_DELTA = 0xA282EAD8


def _masked_crc_int(data) -> int:
    crc = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _masked_crc(data: bytes) -> np.ndarray:
    return np.array([_masked_crc_int(data)], "<u4")
