"""The decision rule: from each choice's log-likelihood to the predicted choice, and to a result.

Both backends decide by this rule. ``letter``: the choice whose letter has the highest
log-likelihood (lm-eval's ``acc``). ``cloze`` and ``completion``: the highest log-likelihood
divided by the choice's length in characters, without the leading space (lm-eval's ``acc_norm``).
Ties go to the first choice, as ``numpy.argmax``.
"""

from __future__ import annotations

import math
from typing import Sequence

from rmu.eval.results import Prediction, TaskResult
from rmu.eval.tasks import Question, Task

PER_CHARACTER = ("cloze", "completion")  # scorings decided per character of the answer text


def decision_scores(loglikelihoods: Sequence[float], choice_texts: Sequence[str], scoring: str) -> list[float]:
    """What the prediction maximises: the log-likelihood (letter) or it per character (cloze, completion)."""
    if scoring in PER_CHARACTER:
        # max(.., 1): an empty choice would divide by zero (lm-eval yields inf there)
        return [ll / max(len(text), 1) for ll, text in zip(loglikelihoods, choice_texts)]
    return list(loglikelihoods)


def choice_scores(question: Question, loglikelihoods: Sequence[float], scoring: str) -> list[float]:
    """:func:`decision_scores` for a question's own choices."""
    return decision_scores(loglikelihoods, question.choices, scoring)


def answer_probability(question: Question, loglikelihoods: Sequence[float], scoring: str) -> float:
    """The weight the decision rule puts on the right answer: the softmax, over the question's
    choices, of the scores the prediction maximises (1 / number of choices when the model has no
    preference). Unlike accuracy it also sees how sure the model still is where it answers right."""
    scores = choice_scores(question, loglikelihoods, scoring)
    top = max(scores)
    weights = [math.exp(score - top) for score in scores]
    return weights[question.answer] / sum(weights)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on ties (as numpy.argmax)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def predict(index: int, loglikelihoods: Sequence[float], choice_texts: Sequence[str], answer: int,
            scoring: str) -> Prediction:
    """The prediction for one question, by the rule of ``scoring``."""
    predicted = argmax(decision_scores(loglikelihoods, choice_texts, scoring))
    return Prediction(index, predicted, answer, predicted == answer, [float(ll) for ll in loglikelihoods])


def result_from_loglikelihoods(task: Task, scoring: str, loglikelihoods: list[list[float]],
                               backend: str = "native") -> TaskResult:
    """The TaskResult of ``task`` given each question's choice log-likelihoods, in question order."""
    predictions = [predict(index, lls, question.choices, question.answer, scoring)
                   for index, (question, lls) in enumerate(zip(task.questions, loglikelihoods))]
    return TaskResult.from_predictions(task.name, scoring, predictions,
                                       (len(q.choices) for q in task.questions), backend)
