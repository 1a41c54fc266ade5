"""Where a result came from: the package versions and the hardware of a run, saved in its
``result.json`` so a number in a table can be traced to the software and machine that made it."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import numpy as np
import torch

import frlr

__all__ = ["cpu_model", "hardware", "versions"]


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


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's "model name", else ``lscpu``'s "Model name" (ARM
    Linux names its cores only there), else what ``platform`` knows. One reader for the runs'
    ``result.json`` and the benchmark records' machine line."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lscpu = ""
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device: torch.device, world_size: int) -> dict[str, Any]:
    """The platform, the CPU model ([`cpu_model`][]), core and thread counts, the device and
    the number of processes; the GPU's name on CUDA."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": world_size,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
