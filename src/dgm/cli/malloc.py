"""glibc's malloc, set for a process that frees and reallocates feature maps of many megabytes.

By default glibc serves an allocation above a threshold that adapts up to 32 MB from fresh
``mmap`` pages and hands them back when freed, and trims the heap's free top above twice that
threshold. Scoring images in batches allocates and frees a network's feature maps over and over,
so the kernel zeroes and page-faults the same memory in again every batch: ``dgm eval --metrics
nll`` of the Gated PixelCNN recipe on the 10,000 test images of binarized MNIST (2 threads) made
7.3 million page faults and spent 14.9 s of its 59.6 s in the kernel. With allocations up to
32 MB served from the heap and up to 256 MB of its free top kept, it made 0.1 million and took
48.0 s, the same figure to the last digit. Training steps did not change (the Gated PixelCNN's and
flow matching's MNIST steps, 2 threads, ``benchmarks/precision.py``).

The ``dgm`` command sets this once at start (:func:`tune`); a library user's process is left as
it is. ``DGM_MALLOC=default`` keeps glibc's own settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune"]

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: allocations below this come from the heap (glibc's largest allowed threshold on 64-bit)
MMAP_THRESHOLD = 32 << 20
#: free memory at the heap's top kept for the next batch instead of returned to the kernel
TRIM_THRESHOLD = 256 << 20


def tune() -> bool:
    """Set the two thresholds on Linux with glibc; ``True`` when both were set. Anywhere else
    (macOS, Windows, musl) or with ``DGM_MALLOC=default``, nothing is changed."""
    if os.environ.get("DGM_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
