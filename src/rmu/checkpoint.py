"""Former name of :mod:`rmu.run_folder` (the folder ``rmu unlearn`` writes), kept for one release.

A model checkpoint itself (finding, reading, patching one) is :mod:`rmu.loading`.
"""

from rmu.run_folder import (  # noqa: F401
    COMMAND, INCOMPLETE_SUFFIX, RESUME_DIR, RUN_FILE, STATE_FILE, VECTORS_FILE, OutputPlan, is_finished_run, library_versions, run_summary,
    save_model,
)
