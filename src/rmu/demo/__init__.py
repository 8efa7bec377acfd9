"""The offline demo: a real pretrained model from a PyPI package and a benchmark built from facts."""

from rmu.demo.benchmark import DemoBenchmark, build_benchmark, write_benchmark
from rmu.demo.model import smollm2_path

__all__ = ["DemoBenchmark", "build_benchmark", "smollm2_path", "write_benchmark"]
