"""The machine line in the header of every benchmark record (the CPU as ``frlr.provenance``
reads it for a run's ``result.json``), and the process memory readings the memory tables take."""

from __future__ import annotations

import resource

from frlr.provenance import cpu_model


def cpu_and_torch() -> str:
    """The CPU, the threads torch computes with and torch's version: what a timing depends on."""
    import torch

    return f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def current_rss_mb() -> float:
    """This process's resident memory now, MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux: clear_refs 5), so that one-time set-up
    before a measurement (a compilation, a warm-up call) is not counted in its peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM), MB. Not ru_maxrss: Linux carries that across
    fork+exec, so a child started by a large parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
