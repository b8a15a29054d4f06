"""Apply GPU memory settings to TensorFlow before it initializes its devices."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from tfds_bigarrays import _env
from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays.gpu._devices import Device, device_api

logger = logging.getLogger("tfds_bigarrays.gpu")

ENV_MEMORY_MB = _env.GPU_MEMORY_MB.name
ENV_DEVICE = _env.GPU_DEVICE.name

_warned_no_gpu = False


class GpuConfigError(TfdsBigarraysError, RuntimeError):
    """A GPU setting cannot be applied (too late, conflicting, or out of range)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Applied:
    """What a call changed.

    Attributes:
      applied: False when nothing was set (no GPU visible to TensorFlow).
      devices: the physical devices concerned.
      setting: a readable description ('memory_limit=1024MB', ...).
      reason: why nothing was applied, when `applied` is False.
    """

    applied: bool
    devices: tuple[str, ...]
    setting: str
    reason: str = ""


_TOO_LATE = (
    "TensorFlow has already initialized its devices, so {what} can no longer be set "
    "(TensorFlow: {error}). Move the call earlier: to the top of the script, before "
    "creating any tensor, model or dataset and before iterating a dataset; or run the "
    "unmodified script as `python -m tfds_bigarrays.gpu --memory-limit MB script.py`."
)


def _check_mb(value: object, *, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise GpuConfigError(f"{what}={value!r} must be a positive int (megabytes), e.g. 2048.")
    return value


def _select(kind: str, devices: Sequence[int] | int | None) -> list[Device]:
    if devices is not None:
        # Checked even without a GPU, so a typo fails on the laptop, not on the cluster.
        wanted = [devices] if isinstance(devices, int) else devices
        if (
            isinstance(wanted, (str, bytes))
            or not isinstance(wanted, Sequence)
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in wanted)
        ):
            raise GpuConfigError(
                f"devices={devices!r} must be a device index (int >= 0) or a list of "
                "them, e.g. 0 or [0, 1]."
            )
    found = device_api().physical_devices(kind)
    if devices is None or not found:
        return found
    wanted = [devices] if isinstance(devices, int) else list(devices)
    for index in wanted:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(found):
            names = ", ".join(d.name for d in found)
            raise GpuConfigError(
                f"devices={devices!r}: TensorFlow sees {len(found)} {kind} device(s) ({names}); "
                f"use indices 0..{len(found) - 1}."
            )
    return [found[i] for i in wanted]


def _nothing(kind: str, setting: str) -> Applied:
    global _warned_no_gpu
    reason = f"no {kind} visible to TensorFlow"
    if not _warned_no_gpu:
        logger.warning("%s: %s not applied.", reason, setting)
        _warned_no_gpu = True
    return Applied(applied=False, devices=(), setting=setting, reason=reason)


def _set_limits(device: Device, limits: list[int | None], *, what: str) -> None:
    api = device_api()
    if api.logical_limits(device) == limits:
        return  # the same call repeated: nothing to do, even after initialization
    if api.memory_growth(device):
        raise GpuConfigError(
            f"Memory growth is enabled on {device.name}, and TensorFlow cannot combine it "
            f"with {what}. Remove the memory_growth() call (or set only one of the two)."
        )
    try:
        api.set_logical_limits(device, limits)
    except RuntimeError as e:
        raise GpuConfigError(_TOO_LATE.format(what=what, error=e)) from e


def limit_memory(
    megabytes: int | None = None, *, devices: Sequence[int] | int | None = None
) -> Applied:
    """Caps TensorFlow's memory on one or all GPUs.

    Args:
      megabytes: the cap per GPU. None reads TFDS_BIGARRAYS_GPU_MEMORY_MB.
      devices: GPU indices (as in `tf.config.list_physical_devices('GPU')`);
        None for all, or TFDS_BIGARRAYS_GPU_DEVICE when set.

    Returns:
      `Applied`; `applied=False` (after one logged warning) when there is no GPU.

    Raises:
      GpuConfigError: TensorFlow already initialized its devices with another
        setting, memory growth is on, or an argument is out of range.
    """
    try:
        if megabytes is None:
            megabytes = _env.get(_env.GPU_MEMORY_MB)
            if megabytes is None:
                raise GpuConfigError(
                    f"limit_memory() needs megabytes, or the environment variable {ENV_MEMORY_MB}."
                )
        if devices is None:
            env_devices = _env.get(_env.GPU_DEVICE)
            devices = list(env_devices) if env_devices is not None else None
    except _env.EnvError as e:
        raise GpuConfigError(str(e)) from None
    megabytes = _check_mb(megabytes, what="megabytes")
    setting = f"memory_limit={megabytes}MB"
    chosen = _select("GPU", devices)
    if not chosen:
        return _nothing("GPU", setting)
    for device in chosen:
        _set_limits(device, [megabytes], what="a memory limit")
    return Applied(applied=True, devices=tuple(d.name for d in chosen), setting=setting)


def split(
    n: int, megabytes: int | None = None, *, device: int = 0, device_type: str = "GPU"
) -> Applied:
    """Splits one physical device into `n` logical devices.

    Several models then train in one process, each under `tf.device(...)` of
    its own logical device (`tf.config.list_logical_devices('GPU')`).

    Args:
      n: number of logical devices.
      megabytes: memory of each (required for GPUs; must be None for CPUs).
      device: index of the physical device.
      device_type: "GPU", or "CPU" (several logical CPUs, e.g. for tests of
        distribution strategies).

    Returns:
      `Applied`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GpuConfigError(f"n={n!r} must be an int >= 1 (logical devices to create).")
    if device_type not in ("GPU", "CPU"):
        raise GpuConfigError(f"device_type={device_type!r} must be 'GPU' or 'CPU'.")
    if device_type == "GPU":
        megabytes = _check_mb(megabytes, what="megabytes")
    elif megabytes is not None:
        raise GpuConfigError("megabytes must be None for device_type='CPU' (CPUs take no limit).")
    setting = f"{n} logical {device_type}s" + (f" of {megabytes}MB" if megabytes else "")
    chosen = _select(device_type, device)
    if not chosen:
        return _nothing(device_type, setting)
    _set_limits(chosen[0], [megabytes] * n, what="logical devices")
    return Applied(applied=True, devices=(chosen[0].name,), setting=setting)


def memory_growth(*, devices: Sequence[int] | int | None = None) -> Applied:
    """Lets TensorFlow grow GPU memory on demand instead of taking it all.

    Cannot be combined with `limit_memory` or `split` on the same GPU.
    """
    api = device_api()
    chosen = _select("GPU", devices)
    setting = "memory_growth=True"
    if not chosen:
        return _nothing("GPU", setting)
    for device in chosen:
        if api.memory_growth(device):
            continue
        if api.logical_limits(device) is not None:
            raise GpuConfigError(
                f"{device.name} already has logical devices or a memory limit, which "
                "TensorFlow cannot combine with memory growth. Use one or the other."
            )
        try:
            api.set_memory_growth(device, True)
        except RuntimeError as e:
            raise GpuConfigError(_TOO_LATE.format(what="memory growth", error=e)) from e
    return Applied(applied=True, devices=tuple(d.name for d in chosen), setting=setting)
