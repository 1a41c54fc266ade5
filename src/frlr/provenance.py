"""Where a result came from: the package versions and the hardware of a run, saved in its
``result.json`` so a number in a table can be traced to the software and machine that made it."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import torch

import frlr

__all__ = ["hardware", "versions"]


def versions() -> dict[str, str]:
    """The versions of frlr, torch, numpy, scipy and Python."""
    import scipy  # the statistics' dependency; imported only when a run finishes

    return {
        "frlr": frlr.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def hardware(device: torch.device, world_size: int) -> dict[str, Any]:
    """The platform, the CPU model (from /proc/cpuinfo where there is one), core and thread
    counts, the device and the number of processes; the GPU's name on CUDA."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": world_size,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
