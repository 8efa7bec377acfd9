"""Moved to :mod:`rmu.demo.keyword_robustness` (a driver of the demo, not an attack); this alias goes
in 0.2.

``python -m rmu.attacks.keyword_robust_demo OUTPUT [VARIANT ...]`` still runs it, after a one-line note.
"""

import sys

from rmu.demo.keyword_robustness import EVAL_VARIANTS, VARIANTS, main, measure, run, summary

__all__ = ["EVAL_VARIANTS", "VARIANTS", "main", "measure", "run", "summary"]

if __name__ == "__main__":
    print("note: rmu.attacks.keyword_robust_demo moved to rmu.demo.keyword_robustness "
          "(python -m rmu.demo.keyword_robustness)", file=sys.stderr)
    main()
