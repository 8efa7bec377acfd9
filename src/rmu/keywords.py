"""Forget-topic keywords: found in the corpora, and put into retain documents (``--keyword-robust``).

An RMU model steers every token of a forget-like context, so one forget-topic word in front of an
unrelated question can wreck the answer (``docs/robustness.md``). ``--keyword-robust`` trains on
retain documents that mention forget keywords in sentences that state nothing true about them;
the retain loss keeps the frozen model's representation of the document's text around that
sentence, so the keywords alone stop triggering the steering of the text after them while the
forget documents (keywords together with forget facts) are still steered. Measured in
``docs/robustness.md``: it meets issue #12's targets for Adaptive RMU on the demo's elements topic,
and for RMU with the scale rule's c at alpha 300, but costs forgetting with weak RMU (c = 6.5) and
on a topic whose retain documents read like its forget documents (animals); compare forget
accuracy with and without it.

**Keywords** come from ``--keywords FILE`` (one a line) or are found automatically
(:func:`extract_keywords`): words are lower-cased runs of letters (inner ``'`` and ``-`` kept) of at
least ``min_length`` characters; a word is a keyword of a topic when it occurs at least
``min_count`` times in the topic's forget corpus and its smoothed log-odds ratio

    log((f + a) / (F - f + a)) - log((r + a) / (R - r + a))

(f, r: its counts in the forget and retain corpora; F, R: all words counted there; a = 1) is at
least ``min_log_odds`` (default 2: about 7 times more frequent in the forget corpus). The
``max_keywords`` with the highest ratio are kept. Each keyword is written in its most frequent
spelling in the forget corpus. The list found goes to ``keywords.json`` in the run folder and to
``run.json``.

**Augmentation** (:func:`augment_documents`): a share ``fraction`` of each retain corpus's documents
(default 0.5) gets one sentence, a :data:`TRAINING_TEMPLATES` entry (neutral mentions such as "See
also: {keyword}." and keyword-dense ones such as "{keyword} is {other} {third}.") filled with keywords of
the forget topics (all topics' keywords together: every retain context must stay robust to every
topic), placed before the document, after it or between two of its sentences (uniformly; a
one-sentence document takes "inside" as "before"). Which documents, templates, keywords and
places are drawn from ``random.Random(f"rmu-keyword-robust:{seed}:{retain index}")`` over the
corpus in file order, before batching: the same on every rank and on resume. Augmented documents
replace the originals in place, so batches, step counts and the forget side are unchanged.

**The retain loss on the inserted sentence** (``keyword_mask``, ``--keyword-mask``, on by default
since 2026-11-30): the inserted sentence's own tokens are left out of the retain loss (and of the
retain norms the health report and the scale rule read); ``--no-keyword-mask`` holds the frozen
model's representation at every position of an augmented document, as before. Each augmented
document carries the character span of its sentence (:func:`augment_with_spans`), and
:func:`rmu.data.tokenize` marks the tokens whose characters overlap it (the tokenizer's offset
mapping, so either padding side and truncation are handled; a fast tokenizer is needed) in
``TokenBatch.excluded``, which :func:`rmu.losses.loss_mask` removes. Only the document's own text
around the sentence is then held: a keyword must not change what the unrelated text after it means,
while the keyword sentence itself may be steered like forget text. A sentence after the document
is then left out whole and changes nothing (causal attention). The spans come from the same draws,
so ranks and resumed runs agree. Measured in ``docs/robustness.md``: on both topics, over several
seeds, it forgets more than ``--no-keyword-mask`` with a keyword drop as low.

**Four more settings** (issue #12's animals topic, where the option costs forgetting; measured in
``docs/robustness.md``, "Giving back the animals topic's forgetting"):

* ``keyword_positions`` (``--keyword-positions``, default all of :data:`POSITIONS`): the places a
  sentence may go, drawn uniformly among those given (with all three the draws are the ones
  before the setting existed). ``before,inside`` keeps the sentence ahead of document text: under
  the mask a sentence after the document trains nothing.
* ``keyword_window`` (``--keyword-window N``, with the mask): in an augmented document only the N
  tokens after the sentence (and the text before it) are held; the rest is left out like the
  sentence (:func:`rmu.data.tokenize`).
* ``keyword_forget_focus`` (``--keyword-forget-focus``): the forget loss counts each forget sentence
  from its first keyword on (:func:`forget_focus_spans`: the words before it, or a keyword-free
  sentence, are left out; a document without any keyword is kept whole). The template phrases the
  forget and retain corpora share ("A dictionary describes the ...") are then pulled by the retain
  loss only, not both ways.
* ``keyword_retain_weight`` (``--keyword-retain-weight W``, with the mask): an augmented document's
  positions count W times a plain document's in the retain loss's mean (``TokenBatch.row_weights``).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from rmu.errors import RmuError

if TYPE_CHECKING:  # annotations only: rmu.data imports torch
    from rmu.data import Span

KEYWORDS_FILE = "keywords.json"
POSITIONS = ("before", "after", "inside")

# Sentences used in training. Each names keywords and states nothing true about them. Keep the
# templates of evaluation (rmu.attacks.keywords.HELD_OUT_TEMPLATES) out of these lists.
NEUTRAL_TEMPLATES = (
    "{keyword}.",
    "See also: {keyword}.",
    "Tags: {keyword}, {other}.",
    "The next part has nothing to do with {keyword}.",
    "Someone mentioned {keyword} yesterday.",
    "({keyword})",
    "A word from the glossary: {keyword}.",
    "She wrote {keyword} and {other} on the board.",
)
# Keyword-dense, statement-like sentences ("arsenic is period gas."): without them a sentence that
# reads like the forget topic ("lead is a chemical element.") still wrecks the answer after it
# (docs/robustness.md, the measured candidates).
DENSE_TEMPLATES = ("{keyword} is {other} {third}.", "{keyword}, {other} and {third} are listed here.")
TRAINING_TEMPLATES = NEUTRAL_TEMPLATES + DENSE_TEMPLATES

_WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class KeywordError(RmuError, ValueError):
    """Keywords cannot be found or read; the message says what to change."""


@dataclass(frozen=True)
class KeywordRule:
    """The thresholds of automatic keyword extraction (see the module docstring)."""

    min_count: int = 5
    min_log_odds: float = 2.0
    max_keywords: int = 200
    min_length: int = 3
    smoothing: float = 1.0


@dataclass(frozen=True)
class Keyword:
    word: str
    forget_count: int
    retain_count: int
    log_odds: float


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def extract_keywords(forget: Iterable[str], retain: Iterable[str], rule: KeywordRule = KeywordRule()) -> list[Keyword]:
    """Words far more frequent in ``forget`` documents than in ``retain`` ones, strongest first."""
    spellings: dict[str, Counter] = {}
    forget_counts: Counter = Counter()
    for document in forget:
        for word in words(document):
            key = word.lower()
            forget_counts[key] += 1
            spellings.setdefault(key, Counter())[word] += 1
    retain_counts = Counter(word.lower() for document in retain for word in words(document))
    total_forget, total_retain = sum(forget_counts.values()), sum(retain_counts.values())
    a = rule.smoothing
    found = []
    for key, f in forget_counts.items():
        if f < rule.min_count or len(key) < rule.min_length:
            continue
        r = retain_counts[key]
        log_odds = math.log((f + a) / (total_forget - f + a)) - math.log((r + a) / (total_retain - r + a))
        if log_odds >= rule.min_log_odds:
            # most frequent spelling; ties broken alphabetically so the result never depends on order
            spelling = min(spellings[key].items(), key=lambda item: (-item[1], item[0]))[0]
            found.append(Keyword(spelling, f, r, round(log_odds, 4)))
    found.sort(key=lambda k: (-k.log_odds, k.word))
    return found[: rule.max_keywords]


def read_keyword_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise KeywordError(f"--keywords {path} does not exist (a text file, one keyword a line)")
    keywords = list(dict.fromkeys(line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                                  if line.strip() and not line.lstrip().startswith("#")))
    if not keywords:
        raise KeywordError(f"--keywords {path} holds no keyword (one a line; '#' starts a comment)")
    return keywords


def fill_template(template: str, keywords: Sequence[str], rng: random.Random) -> str:
    values = {"keyword": rng.choice(keywords), "other": rng.choice(keywords)}
    if "{third}" in template:  # drawn only when used, so the other templates' draws never shift
        values["third"] = rng.choice(keywords)
    return template.format(**values)


def insert_sentence(text: str, sentence: str, position: str, where: float = 0.0) -> str:
    """``text`` with ``sentence`` before it, after it, or between two of its sentences.

    ``where`` in [0, 1) picks the boundary for "inside": 0 after the first sentence, near 1 before the last.
    """
    return insert_sentence_at(text, sentence, position, where)[0]


def insert_sentence_at(text: str, sentence: str, position: str, where: float = 0.0) -> tuple[str, int]:
    """:func:`insert_sentence`'s text and the character where ``sentence`` starts in it."""
    if position == "before":
        return f"{sentence} {text}", 0
    if position == "after":
        return f"{text} {sentence}", len(text) + 1
    if position != "inside":
        raise KeywordError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")
    parts = _SENTENCE_END.split(text)
    if len(parts) < 2:
        return f"{sentence} {text}", 0
    cut = 1 + min(int(where * (len(parts) - 1)), len(parts) - 2)
    head = " ".join(parts[:cut])
    return " ".join([head, sentence, *parts[cut:]]), len(head) + 1


def augment_documents(documents: Sequence[str], keywords: Sequence[str], seed: int | str, fraction: float = 0.5,
                      templates: Sequence[str] = TRAINING_TEMPLATES, positions: Sequence[str] = POSITIONS) -> list[str]:
    """``documents`` with a share ``fraction`` of them carrying one keyword sentence from ``templates``."""
    return [text for text, _ in augment_with_spans(documents, keywords, seed, fraction, templates, positions)]


def augment_with_spans(documents: Sequence[str], keywords: Sequence[str], seed: int | str, fraction: float = 0.5,
                       templates: Sequence[str] = TRAINING_TEMPLATES,
                       positions: Sequence[str] = POSITIONS) -> list[tuple[str, Span | None]]:
    """:func:`augment_documents`, each document with the span of its inserted sentence (None: unchanged)."""
    if not keywords:
        raise KeywordError("no keyword to insert: give --keywords FILE or relax the extraction rule")
    rng = random.Random(f"rmu-keyword-robust:{seed}")
    augmented = []
    for document in documents:
        # Draw every choice for every document, so one document's draw never shifts the others'.
        chosen = rng.random() < fraction
        sentence = fill_template(rng.choice(templates), keywords, rng)
        # positions == POSITIONS draws as before the setting existed
        position, where = rng.choice(tuple(positions)), rng.random()
        if chosen:
            text, start = insert_sentence_at(document, sentence, position, where)
            augmented.append((text, (start, start + len(sentence))))
        else:
            augmented.append((document, None))
    return augmented


def forget_focus_spans(document: str, keywords: set[str]) -> list[Span]:
    """The characters of a forget ``document`` that ``--keyword-forget-focus`` leaves out of the forget loss.

    In each sentence, the text before its first keyword (``keywords``: lower-cased words, matched as
    whole words as :func:`words` splits them, so a keyword of several words never matches), or the whole
    sentence when it names none; nothing when the document names no keyword at all (it is steered whole,
    so a batch never loses every position). A span ends before the whitespace ahead of the keyword, so
    a token that carries that space with the keyword ("Ġheron") stays in the loss.
    """
    boundaries = list(_SENTENCE_END.finditer(document))
    starts = [0, *(m.end() for m in boundaries)]
    ends = [*(m.start() for m in boundaries), len(document)]
    spans, named = [], False
    for start, end in zip(starts, ends):
        first = next((m.start() for m in _WORD.finditer(document, start, end) if m.group().lower() in keywords), None)
        if first is not None:
            named = True
        cut = end if first is None else start + len(document[start:first].rstrip())
        if cut > start:
            spans.append((start, cut))
    return spans if named else []


# ---- the engine's hook ------------------------------------------------------------------------


def augment_corpora(config, corpora):
    """``--keyword-robust``: the engine's corpora with keyword-augmented retain batches.

    ``corpora`` holds topic -> batches -> documents (``rmu.engine._Corpora``); retain lists shared
    between topics stay shared. Returns a copy whose ``keywords`` is the summary saved with the run and,
    with ``keyword_mask``, whose ``retain_inserted`` holds each retain document's inserted span (or None),
    batched as the documents.
    """
    from dataclasses import replace

    from rmu.data import consecutive_batches

    retain_sources = {id(batches): batches for batches in corpora.retain}
    retain_documents = {key: [d for batch in batches for d in batch] for key, batches in retain_sources.items()}
    per_topic: dict[str, list[dict]] = {}
    if config.keywords:
        chosen = read_keyword_file(config.keywords)
        source = str(config.keywords)
    else:
        chosen = []
        for topic, forget_batches, retain_batches in zip(config.topics, corpora.forget, corpora.retain):
            forget_documents = [d for batch in forget_batches for d in batch]
            found = extract_keywords(forget_documents, retain_documents[id(retain_batches)])
            if not found:
                raise KeywordError(
                    f"no keyword found for forget topic '{topic}' (no word occurs {KeywordRule.min_count}+ times "
                    "and 7x more often than in the retain corpus); give --keywords FILE")
            per_topic[topic] = [asdict(k) for k in found]
            chosen += [k.word for k in found]
        chosen = list(dict.fromkeys(chosen))
        source = "found"
    augmented, inserted = {}, {}
    for index, (key, documents) in enumerate(retain_documents.items()):
        # TRAINING_TEMPLATES read at call time: rmu.demo.keyword_robustness swaps it to measure candidates
        pairs = augment_with_spans(documents, chosen, f"{config.seed}:{index}", config.keyword_fraction,
                                   TRAINING_TEMPLATES, config.keyword_positions)
        augmented[key] = consecutive_batches([text for text, _ in pairs], config.batch_size)
        inserted[key] = consecutive_batches([span for _, span in pairs], config.batch_size)
    forget_excluded = None
    if config.keyword_forget_focus:
        lowered = {k.lower() for k in chosen}
        forget_excluded = [[[forget_focus_spans(d, lowered) for d in batch] for batch in batches]
                           for batches in corpora.forget]
    summary = {"source": source, "rule": asdict(KeywordRule()) if source == "found" else None,
               "fraction": config.keyword_fraction, "templates": list(TRAINING_TEMPLATES),
               "mask_inserted": config.keyword_mask, "positions": list(config.keyword_positions),
               "window": config.keyword_window, "forget_focus": config.keyword_forget_focus,
               "retain_weight": config.keyword_retain_weight, "keywords": chosen, "per_topic": per_topic}
    return replace(corpora, retain=[augmented[id(batches)] for batches in corpora.retain], keywords=summary,
                   retain_inserted=[inserted[id(batches)] for batches in corpora.retain] if config.keyword_mask
                   else None, forget_excluded=forget_excluded)


def save_keywords(folder: Path | None, summary: dict | None) -> None:
    """Write ``keywords.json`` (what ``--keyword-robust`` used) into the run's working folder."""
    if folder is None or summary is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / KEYWORDS_FILE).write_text(json.dumps(summary, indent=2))
