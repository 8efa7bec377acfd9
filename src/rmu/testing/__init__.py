"""What tests, benchmarks and examples need and users may reuse: no hub, seconds to build.

- :mod:`rmu.testing.tiny`: tiny random-weight models of every supported architecture, with a
  tokenizer trained on the fly (``from rmu.testing import tiny_model`` keeps working).
- :mod:`rmu.testing.reference`: the plain two-model RMU / Adaptive RMU the engine is checked against
  (``tests/test_engine.py``) and timed against (``benchmarks/bench_engine.py``).
"""

from rmu.testing.tiny import TINY_ARCHITECTURES, save_tiny_model, tiny_config, tiny_model, tiny_tokenizer

__all__ = ["TINY_ARCHITECTURES", "save_tiny_model", "tiny_config", "tiny_model", "tiny_tokenizer"]
