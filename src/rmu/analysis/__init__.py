"""Measurements of the paper's claims: sweeps over layers and coefficients, and analyses.

Everything here reuses the engine (:func:`rmu.engine.unlearn`) and the evaluator
(:func:`rmu.eval.evaluate`). Each analysis and sweep is an experiment (:mod:`rmu.experiments`: a
settings model, ``compute``, figures, report tables); the functions below are their Python entry
points and save JSON (and a PNG) when given an output folder.
"""

from rmu.analysis.common import AnalysisError
from rmu.analysis.confidence import analyze_confidence, generated_max_logits
from rmu.analysis.noise import analyze_noise, noise_sensitivity
from rmu.analysis.norms import analyze_norms
from rmu.analysis.sweeps import sweep_coeff, sweep_layers
from rmu.analysis.token_norms import analyze_token_norms, token_norms

__all__ = ["AnalysisError", "analyze_confidence", "analyze_noise", "analyze_norms", "generated_max_logits",
           "noise_sensitivity", "sweep_coeff", "sweep_layers", "analyze_token_norms", "token_norms"]
