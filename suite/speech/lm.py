"""Word n-gram language model for CTC decoding: built with IRSTLM, searched with Flashlight.

`build_language_model` estimates a backoff n-gram model (ARPA format) from transcripts with
IRSTLM's `tlm` (modified shift-beta, i.e. modified Kneser–Ney discounting; Witten–Bell for
corpora too small for it), a Debian package that `make setup` installs; any ARPA model
made elsewhere (KenLM's `lmplz`, SRILM) serves as well. `LexiconDecoder` finds the word
sequence that maximises the CTC score plus the weighted LM score with Flashlight's lexicon
beam search (the decoder behind torchaudio's `ctc_decoder`; KenLM reads the ARPA file).
The model's vocabulary is the lexicon: a word it does not know cannot be written.

The search runs on the CPU in Python, outside the TensorFlow graph, so a speech export
returns the per-frame log-probabilities beside its in-graph transcript and ships the
model file; `rnnsuite speech predict` decodes them with the LM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from shared.errors import DataError

LM_FILE = "lm.arpa"
_SENTENCE_MARKS = {"<s>", "</s>", "<unk>"}
# Debian installs IRSTLM's tools outside PATH (`/usr/bin/irstlm` dispatches to them).
_IRSTLM_BIN = Path("/usr/lib/irstlm/bin")


def _tlm() -> str:
    found = shutil.which("tlm") or shutil.which("tlm", path=str(_IRSTLM_BIN))
    if found is None:
        raise DataError(
            "building a language model needs IRSTLM's `tlm`: `make setup` installs it "
            "(apt-get install irstlm); or set decode.lm_path to an ARPA model, or "
            "decode.method=greedy|beam to decode without one"
        )
    return found


def build_language_model(transcripts, path, order=3) -> Path:
    """Writes an `order`-gram backoff model of `transcripts` (one sentence each) to `path`."""
    sentences = [" ".join(t.split()) for t in transcripts]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise DataError(f"{path}: no transcripts to build a language model from")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        text, arpa = Path(tmp) / "sentences.txt", Path(tmp) / LM_FILE
        # IRSTLM wants the sentence boundaries written out (its add-start-end.sh).
        text.write_text("".join(f"<s> {s} </s>\n" for s in sentences), encoding="utf-8")
        # Singletons stay: a small corpus's rare words are most of its vocabulary.
        command = [_tlm(), f"-tr={text}", f"-n={int(order)}", "-bo=yes", "-ps=no", f"-o={arpa}"]
        # Modified shift-beta needs counts of counts up to 4, which a few dozen sentences
        # may not have; Witten–Bell needs none.
        for smoothing in ("msb", "wb"):
            result = subprocess.run([*command, f"-lm={smoothing}"], capture_output=True, text=True)
            if result.returncode == 0 and arpa.is_file():
                break
        else:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise DataError(f"{path}: IRSTLM's tlm failed: {' / '.join(tail)}")
        _place(arpa, path)
    return path


def arpa_words(path) -> list[str]:
    """The words of an ARPA model (its 1-grams, sentence marks left out)."""
    words, in_unigrams = [], False
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line == "\\1-grams:":
                    in_unigrams = True
                elif in_unigrams and line.startswith("\\"):
                    break
                elif in_unigrams and line:
                    fields = line.split()
                    if len(fields) >= 2 and fields[1] not in _SENTENCE_MARKS:
                        words.append(fields[1])
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the language model ({error})") from None
    if not words:
        raise DataError(f"{path}: not an ARPA language model (no 1-grams)")
    return words


class LexiconDecoder:
    """CTC beam search over the words of an ARPA model, scored by it (shallow fusion).

    Args:
        lm_path: the ARPA model; its words that `tokens` can spell form the lexicon.
        tokens: the CTC classes' tokens in id order (blank excluded; it is the last class).
            `separator` separates words; tokens that are not characters (the special
            `[PAD]`-style ones) are never emitted.
        beam_width: hypotheses kept per frame.
        lm_weight: weight of the LM's log10 probability against the acoustic log-probability.
        word_score: added per word (positive: fewer deletions; negative: fewer insertions).
        beam_threshold: hypotheses scoring this far below the best are dropped.
    """

    def __init__(
        self,
        lm_path,
        tokens,
        separator=" ",
        beam_width=200,
        lm_weight=2.0,
        word_score=1.0,
        beam_threshold=25.0,
    ):
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
        )
        from flashlight.lib.text.decoder import LexiconDecoder as FlashlightDecoder
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict

        tokens = list(tokens)
        if separator not in tokens:
            raise ValueError(f"the word separator {separator!r} is not one of the tokens")
        self.num_classes = len(tokens) + 1  # blank last
        self._silence, self._blank = tokens.index(separator), len(tokens)
        # Flashlight names tokens by string: the separator becomes its `|`, specials `<i>`.
        names = [f"<{i}>" if len(t) != 1 or t == separator else t for i, t in enumerate(tokens)]
        names[self._silence] = "|"
        self._never = [i for i, t in enumerate(tokens) if len(t) != 1]
        # Every spelling ends with the separator, but transcripts do not: the model writes
        # no space after the last word, and a hypothesis whose last word is unfinished
        # cannot end. A closing frame that is surely the separator lets the last word end;
        # without it the search dropped a third of the last words.
        self._closing = np.full((1, self.num_classes), -1e9, np.float32)
        self._closing[0, self._silence] = 0.0
        token_dict = Dictionary([*names, "<blank>"])
        spellable = set(tokens) - {separator}
        self.words = sorted({w for w in arpa_words(lm_path) if set(w) <= spellable})
        if not self.words:
            raise DataError(f"{lm_path}: none of the model's words can be spelled with the tokens")
        spellings = {w: [*w, "|"] for w in self.words}
        # The word dictionary takes word -> spellings; `<unk>` needs an index, no spelling.
        self._word_dict = create_word_dict({w: [s] for w, s in spellings.items()} | {"<unk>": []})
        try:
            with _quiet_stderr():  # KenLM draws a progress bar on stderr
                self._lm = KenLM(str(lm_path), self._word_dict)
        except RuntimeError as error:
            raise DataError(f"{lm_path}: KenLM cannot read it ({error})") from None
        trie = Trie(self.num_classes, self._silence)
        start = self._lm.start(False)
        for word, spelling in spellings.items():
            index = self._word_dict.get_index(word)
            _, score = self._lm.score(start, index)  # the word's unigram score, for pruning
            trie.insert([token_dict.get_index(t) for t in spelling], index, score)
        trie.smear(SmearingMode.MAX)
        options = LexiconDecoderOptions(
            beam_size=int(beam_width),
            beam_size_token=self.num_classes,
            beam_threshold=float(beam_threshold),
            lm_weight=float(lm_weight),
            word_score=float(word_score),
            unk_score=float("-inf"),
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        unknown = self._word_dict.get_index("<unk>")
        self._decoder = FlashlightDecoder(
            options, trie, self._lm, self._silence, self._blank, unknown, [], False
        )

    def __call__(self, log_probs, lengths) -> list[str]:
        """Transcripts of `[batch, time, num_classes]` CTC log-probabilities (blank last)."""
        log_probs = np.asarray(log_probs, np.float32)
        if log_probs.ndim != 3 or log_probs.shape[-1] != self.num_classes:
            raise ValueError(
                f"expected log-probabilities [batch, time, {self.num_classes}], "
                f"got {list(log_probs.shape)}"
            )
        texts = []
        for row, length in zip(log_probs, np.asarray(lengths).reshape(-1), strict=True):
            if int(length) == 0:
                texts.append("")
                continue
            emissions = np.concatenate([row[: int(length)], self._closing])  # a copy
            emissions[:, self._never] = -1e9  # untrained special classes never win
            best = self._decoder.decode(emissions.ctypes.data, len(emissions), self.num_classes)
            words = best[0].words if best else []
            texts.append(" ".join(self._word_dict.get_entry(w) for w in words if w >= 0))
        return texts


@contextlib.contextmanager
def _quiet_stderr():
    """Silences file descriptor 2 (C++ libraries write to it directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def copy_language_model(source, directory) -> Path:
    """Copies an ARPA model into `directory` as `LM_FILE`."""
    return _place(source, Path(directory) / LM_FILE)


def _place(source, target) -> Path:
    """Copies `source` to `target` atomically: a killed run never leaves half a model that
    later runs would take for a whole one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target
