"""What the benchmark scripts share. Each script runs as ``python benchmarks/<script>.py``, so this
folder is first on ``sys.path`` and ``from common import ...`` needs no path set-up."""

from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
