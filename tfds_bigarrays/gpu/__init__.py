"""GPU memory limits, applied before TensorFlow initializes its devices.

Streaming data from disk leaves GPU memory to the model, so several models
can train side by side on one card, each under a cap. Call these first thing
in a script, or run an unmodified script with
`python -m tfds_bigarrays.gpu --memory-limit MB script.py`.
Importing this module does not touch TensorFlow's devices.
"""

from tfds_bigarrays.gpu._config import (
    ENV_DEVICE,
    ENV_MEMORY_MB,
    Applied,
    GpuConfigError,
    limit_memory,
    memory_growth,
    split,
)
from tfds_bigarrays.gpu._plan import DEFAULT_OVERHEAD_MB, Plan, plan

__all__ = [
    "DEFAULT_OVERHEAD_MB",
    "ENV_DEVICE",
    "ENV_MEMORY_MB",
    "Applied",
    "GpuConfigError",
    "Plan",
    "limit_memory",
    "memory_growth",
    "plan",
    "split",
]
