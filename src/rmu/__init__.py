"""rmu: representation misdirection unlearning for Hugging Face causal LMs."""

__version__ = "0.1.0"

from rmu.config import UnlearnConfig, make_config  # noqa: E402
from rmu.engine import UnlearnResult, unlearn  # noqa: E402

__all__ = ["UnlearnConfig", "UnlearnResult", "make_config", "unlearn", "__version__"]
