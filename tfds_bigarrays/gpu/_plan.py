"""How much each of N processes may take of one card."""

from __future__ import annotations

import dataclasses

from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays.gpu._config import GpuConfigError, _select
from tfds_bigarrays.gpu._devices import device_api

# What a TensorFlow process holds on the card beyond its cap: the CUDA
# context and libraries. About 300 MB with CUDA's lazy module loading, up to
# about 1 GB without; the default is the safe end.
DEFAULT_OVERHEAD_MB = 1024
MIN_CAP_MB = 256


class GpuPlanError(TfdsBigarraysError, ValueError):
    """The models cannot share the card as asked (the message has the numbers)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """Caps for `models` processes sharing a card of `card_mb`."""

    models: int
    card_mb: int
    overhead_mb: int
    cap_mb: int

    @property
    def total_mb(self) -> int:
        return self.models * (self.cap_mb + self.overhead_mb)


def plan(
    models: int,
    *,
    card_mb: int | None = None,
    overhead_mb: int = DEFAULT_OVERHEAD_MB,
    device: int = 0,
) -> Plan:
    """The memory cap each of `models` processes may take so all fit one card.

    Args:
      models: processes that will share the card.
      card_mb: the card's memory; None reads it from the device (nvidia-smi).
      overhead_mb: per-process memory beyond the cap (CUDA context, libraries).
      device: the GPU index, when reading the card's memory.

    Raises:
      GpuPlanError (a ValueError): the plan is impossible, with the numbers.
    """
    if isinstance(models, bool) or not isinstance(models, int) or models < 1:
        raise GpuPlanError(f"models={models!r} must be an int >= 1.")
    if isinstance(overhead_mb, bool) or not isinstance(overhead_mb, int) or overhead_mb < 0:
        raise GpuPlanError(f"overhead_mb={overhead_mb!r} must be an int >= 0.")
    if card_mb is None:
        try:
            chosen = _select("GPU", device)
        except GpuConfigError as e:
            raise GpuPlanError(str(e)) from e
        card = device_api().card_memory_mb(chosen[0]) if chosen else None
        if card is None:
            raise GpuPlanError(
                "Cannot read the card's memory (no GPU visible, or no nvidia-smi); "
                "pass card_mb=, e.g. card_mb=24576."
            )
        card_mb = card
    if isinstance(card_mb, bool) or not isinstance(card_mb, int) or card_mb <= 0:
        raise GpuPlanError(f"card_mb={card_mb!r} must be a positive int.")
    cap = (card_mb - models * overhead_mb) // models
    if cap < MIN_CAP_MB:
        raise GpuPlanError(
            f"{models} models do not fit a {card_mb} MB card: each needs {overhead_mb} MB "
            f"of overhead, leaving {card_mb - models * overhead_mb} MB, "
            f"{max(cap, 0)} MB each, below the {MIN_CAP_MB} MB minimum. Use fewer models, "
            "a bigger card, or measure the real overhead and pass overhead_mb=."
        )
    return Plan(models=models, card_mb=card_mb, overhead_mb=overhead_mb, cap_mb=cap)
