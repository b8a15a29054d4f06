"""The one seam between the GPU module and TensorFlow's device API.

Everything the GPU module asks TensorFlow goes through `DeviceAPI`. On a
machine with GPUs it is `TensorFlowDevices`; tests of the GPU-only branches
swap in a small fake with `use_device_api`, since no GPU is available to
TensorFlow on the machines where the suite runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True, kw_only=True)
class Device:
    """A physical device, as TensorFlow names it ('/physical_device:GPU:0')."""

    name: str
    kind: str
    index: int
    handle: Any = dataclasses.field(default=None, compare=False, repr=False)


class DeviceAPI(Protocol):
    """What the GPU module needs from TensorFlow. Implementers need not inherit."""

    def physical_devices(self, kind: str) -> list[Device]: ...

    def logical_limits(self, device: Device) -> list[int | None] | None:
        """Memory limits (MB) of the device's logical devices, None if unset."""
        ...

    def set_logical_limits(self, device: Device, limits: list[int | None]) -> None:
        """Raises RuntimeError once TensorFlow initialized its devices."""
        ...

    def memory_growth(self, device: Device) -> bool: ...

    def set_memory_growth(self, device: Device, enable: bool) -> None:
        """Raises RuntimeError once TensorFlow initialized its devices."""
        ...

    def peak_memory_bytes(self, device: Device) -> int | None: ...

    def card_memory_mb(self, device: Device) -> int | None:
        """Total memory of the physical card, or None if it cannot be read."""
        ...


class TensorFlowDevices:
    """`DeviceAPI` over `tf.config` (TensorFlow imported on first use)."""

    def physical_devices(self, kind: str) -> list[Device]:
        import tensorflow as tf

        return [
            Device(name=d.name, kind=kind, index=i, handle=d)
            for i, d in enumerate(tf.config.list_physical_devices(kind))
        ]

    def logical_limits(self, device: Device) -> list[int | None] | None:
        import tensorflow as tf

        configs = tf.config.get_logical_device_configuration(device.handle)
        if configs is None:
            return None
        return [c.memory_limit for c in configs]

    def set_logical_limits(self, device: Device, limits: list[int | None]) -> None:
        import tensorflow as tf

        tf.config.set_logical_device_configuration(
            device.handle, [tf.config.LogicalDeviceConfiguration(memory_limit=m) for m in limits]
        )

    def memory_growth(self, device: Device) -> bool:
        import tensorflow as tf

        if device.kind != "GPU":
            return False
        return bool(tf.config.experimental.get_memory_growth(device.handle))

    def set_memory_growth(self, device: Device, enable: bool) -> None:
        import tensorflow as tf

        tf.config.experimental.set_memory_growth(device.handle, enable)

    def peak_memory_bytes(self, device: Device) -> int | None:
        import tensorflow as tf

        try:
            return int(
                tf.config.experimental.get_memory_info(f"{device.kind}:{device.index}")["peak"]
            )
        except (ValueError, RuntimeError, tf.errors.OpError):
            return None

    def card_memory_mb(self, device: Device) -> int | None:
        # tf.config reports usage, not capacity; nvidia-smi knows the card.
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return None
        try:
            out = subprocess.run(
                [
                    exe,
                    "--query-gpu=memory.total",
                    "--format=csv,noheader,nounits",
                    "-i",
                    str(device.index),
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            return int(out.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None


_API: DeviceAPI = TensorFlowDevices()


def device_api() -> DeviceAPI:
    return _API


@contextlib.contextmanager
def use_device_api(api: DeviceAPI) -> Iterator[DeviceAPI]:
    """Temporarily replaces the device API (for tests of GPU-only branches)."""
    global _API
    previous, _API = _API, api
    try:
        yield api
    finally:
        _API = previous
