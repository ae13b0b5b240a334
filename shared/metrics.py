"""Evaluation metrics: thin wrappers over jiwer, sacrebleu and pycocoevalcap, plain Python in,
float out.

All metrics are corpus-level: errors (or n-gram statistics) are summed over the corpus
before dividing, not averaged per sentence.

| metric | library | range |
|---|---|---|
| `wer`, `cer` | jiwer | 0 … (can exceed 1 with insertions) |
| `bleu`, `chrf` | sacrebleu | 0 … 100 |
| `cider` | pycocoevalcap (CIDEr-D of the COCO caption evaluation) | 0 … 10 |
| `accuracy`, `exact_match` | — | 0 … 1 |
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jiwer
import sacrebleu


def _as_list(texts):
    return [texts] if isinstance(texts, str) else list(texts)


def _check_pairs(references, hypotheses):
    references, hypotheses = _as_list(references), _as_list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} references but {len(hypotheses)} hypotheses; they must pair up."
        )
    if not references:
        raise ValueError("No references and hypotheses to score.")
    return references, hypotheses


def _error_rate(references, hypotheses, process, transform):
    references, hypotheses = _check_pairs(references, hypotheses)
    errors = reference_units = 0
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if pairs:
        output = process([r for r, _ in pairs], [h for _, h in pairs])
        errors += output.substitutions + output.deletions + output.insertions
        reference_units += output.substitutions + output.deletions + output.hits
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        if not reference.strip() and hypothesis.strip():
            errors += len(transform(hypothesis)[0])  # every hypothesis unit is an insertion
    return float(errors) / max(reference_units, 1)


def wer(references, hypotheses) -> float:
    """Corpus word error rate, (substitutions + deletions + insertions) / reference words.

    Words are whitespace-separated (jiwer's default: surrounding and repeated spaces are
    ignored); no case or punctuation normalisation is applied, do it before if wanted.

    Empty references are allowed: every word of their hypothesis counts as an insertion.
    The denominator is `max(reference words, 1)`, so a corpus of empty references scores
    0.0 against empty hypotheses and the number of inserted words otherwise.

    Example: `wer(["a b c"], ["a x c"])` is 1/3.
    """
    return _error_rate(references, hypotheses, jiwer.process_words, jiwer.wer_default)


def cer(references, hypotheses) -> float:
    """Corpus character error rate; as `wer` over characters (spaces count, ends stripped).

    Empty references are handled as in `wer`.
    """
    return _error_rate(references, hypotheses, jiwer.process_characters, jiwer.cer_default)


def _reference_streams(references, num_hypotheses):
    """sacrebleu's layout: one stream per reference position, `None` where a hypothesis
    has fewer references than the most any has."""
    references = _as_list(references)
    if len(references) != num_hypotheses:
        raise ValueError(
            f"{len(references)} references but {num_hypotheses} hypotheses; they must pair up."
        )
    if not references:
        raise ValueError("No references and hypotheses to score.")
    if all(isinstance(reference, str) for reference in references):
        return [references]
    per_hypothesis = [_as_list(reference) for reference in references]
    if any(not refs for refs in per_hypothesis):
        raise ValueError("Every hypothesis needs at least one reference.")
    width = max(len(refs) for refs in per_hypothesis)
    return [[refs[k] if k < len(refs) else None for refs in per_hypothesis] for k in range(width)]


def bleu(references, hypotheses, tokenize="13a", lowercase=False) -> float:
    """Corpus BLEU (sacrebleu), 0–100.

    Args:
        references: one string per hypothesis, or one list of strings per hypothesis
            (several references; the lists may differ in length).
        hypotheses: list of strings.
        tokenize: sacrebleu tokenizer (`"13a"`, `"intl"`, `"char"`, `"none"`, …).
        lowercase: case-insensitive BLEU.
    """
    hypotheses = _as_list(hypotheses)
    streams = _reference_streams(references, len(hypotheses))
    return float(
        sacrebleu.corpus_bleu(hypotheses, streams, tokenize=tokenize, lowercase=lowercase).score
    )


def chrf(references, hypotheses, word_order=0) -> float:
    """Corpus chrF (sacrebleu), 0–100; `word_order=2` gives chrF++.

    `references` as in `bleu`.
    """
    hypotheses = _as_list(hypotheses)
    streams = _reference_streams(references, len(hypotheses))
    return float(sacrebleu.corpus_chrf(hypotheses, streams, word_order=word_order).score)


def cider(references, hypotheses) -> float:
    """Corpus CIDEr-D (the COCO caption evaluation's, via pycocoevalcap), 0–10.

    Papers usually print it times 100 (MSVD models score 0.5–1.1 here, "50–110" there).
    Texts are lowercased and stripped of punctuation, as COCO's (Java) tokenizer does
    before scoring. The document frequencies come from these references,
    so scores compare only on the same reference set. `references` as in `bleu`.
    """
    from pycocoevalcap.cider.cider import Cider

    hypotheses = _as_list(hypotheses)
    streams = _reference_streams(references, len(hypotheses))

    def tokens(text):
        return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())

    references_by_id, hypotheses_by_id = {}, {}
    for index, hypothesis in enumerate(hypotheses):
        references_by_id[index] = [tokens(s[index]) for s in streams if s[index] is not None]
        hypotheses_by_id[index] = [tokens(hypothesis)]
    score, _ = Cider().compute_score(references_by_id, hypotheses_by_id)
    return float(score)


def accuracy(labels: Sequence, predictions: Sequence) -> float:
    """Fraction of `predictions` equal to their label (any comparable values)."""
    labels, predictions = list(labels), list(predictions)
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions.")
    if not labels:
        raise ValueError("No labels and predictions to score.")
    return sum(a == b for a, b in zip(labels, predictions, strict=True)) / len(labels)


def exact_match(references, hypotheses) -> float:
    """Fraction of hypotheses identical to (one of) their reference(s).

    Strings are compared after stripping the ends and collapsing runs of whitespace;
    case and punctuation count. `references` as in `bleu`.
    """
    hypotheses = _as_list(hypotheses)
    streams = _reference_streams(references, len(hypotheses))

    def norm(text):
        return " ".join(text.split())

    hits = 0
    for index, hypothesis in enumerate(hypotheses):
        candidates = {norm(stream[index]) for stream in streams if stream[index] is not None}
        hits += norm(hypothesis) in candidates
    return hits / len(hypotheses)
