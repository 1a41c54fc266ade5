"""The machine line in the header of every benchmark record (``lscpu``, else ``platform``)."""

from __future__ import annotations

import platform
import subprocess


def cpu_model() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lscpu = ""
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_and_torch() -> str:
    """The CPU, the threads torch computes with and torch's version: what a timing depends on."""
    import torch

    return f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
