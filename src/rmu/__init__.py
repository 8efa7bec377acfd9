"""rmu: representation misdirection unlearning for Hugging Face causal LMs."""

from rmu.config import UnlearnConfig, make_config
from rmu.engine import UnlearnResult, unlearn
from rmu.version import __version__

__all__ = ["UnlearnConfig", "UnlearnResult", "make_config", "unlearn", "__version__"]
