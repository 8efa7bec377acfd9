"""Moved to :mod:`rmu.demo.robustness` (a driver of the demo, not an attack); this alias goes in 0.2.

``python -m rmu.attacks.robustness_demo OUTPUT`` still runs it, after a one-line note.
"""

import sys

from rmu.demo.robustness import Settings, build_models, main, run

__all__ = ["Settings", "build_models", "main", "run"]

if __name__ == "__main__":
    print("note: rmu.attacks.robustness_demo moved to rmu.demo.robustness (python -m rmu.demo.robustness)",
          file=sys.stderr)
    main()
