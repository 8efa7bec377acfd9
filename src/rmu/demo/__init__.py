"""The offline demo: real pretrained models from PyPI packages and benchmarks built from facts."""

from rmu.demo.benchmark import DemoBenchmark, build_benchmark, write_benchmark
from rmu.demo.kinds import build_kinds_benchmark
from rmu.demo.model import DEMO_MODELS, gemma3_270m_path, model_path, smollm2_path
from rmu.demo.topics import TOPICS, write_topic

__all__ = ["DEMO_MODELS", "TOPICS", "DemoBenchmark", "build_benchmark", "build_kinds_benchmark", "gemma3_270m_path",
           "model_path", "smollm2_path", "write_benchmark", "write_topic"]
