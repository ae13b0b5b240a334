"""Word n-gram language model for CTC decoding: built with IRSTLM, searched in the graph.

`build_language_model` estimates a backoff n-gram model (ARPA format) from transcripts with
IRSTLM's `tlm` (modified shift-beta, i.e. modified Kneser–Ney discounting; Witten–Bell for
corpora too small for it), a Debian package that `make setup` installs; any ARPA model
made elsewhere (KenLM's `lmplz`, SRILM) serves as well.

`LexiconSearch` finds the word sequence that maximises the CTC score plus the weighted LM
score: a lexicon beam search in the manner of Flashlight's `LexiconDecoder` (the decoder
behind torchaudio's `ctc_decoder`), written in TensorFlow ops so that it runs inside an
export's graph and a served model returns the final transcript. The model's words are the
lexicon (a letter trie): a word it does not know cannot be written. Its tables are
variables, saved with the model.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared.errors import DataError

LM_FILE = "lm.arpa"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
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


def read_arpa(path) -> dict[tuple[str, ...], tuple[float, float]]:
    """An ARPA model's n-grams: words -> (log10 probability, log10 backoff weight).

    Words are lowercased, as the recognizer writes them (LibriSpeech's models, for one, are
    upper case); of n-grams that then coincide, the likelier stays."""
    grams, order = {}, 0
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if not fields or fields[0].startswith("ngram"):
                    continue
                if fields[0].startswith("\\"):  # \data\, \N-grams:, \end\
                    head = fields[0]
                    order = int(head[1]) if head.endswith("-grams:") and head[1].isdigit() else 0
                    continue
                if order and len(fields) >= order + 1:
                    words = tuple(word.lower() for word in fields[1 : order + 1])
                    backoff = float(fields[order + 1]) if len(fields) > order + 1 else 0.0
                    if words not in grams or grams[words][0] < float(fields[0]):
                        grams[words] = (float(fields[0]), backoff)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path}: cannot read the language model ({error})") from None
    if not any(len(gram) == 1 for gram in grams):
        raise DataError(f"{path}: not an ARPA language model (no 1-grams)")
    return grams


class LexiconSearch(tf.Module):
    """CTC beam search over the words of an ARPA model, scored by it (shallow fusion).

    Each hypothesis is a path through the CTC frames (best path, as Flashlight with
    `log_add=False`): its acoustic log-probability plus `lm_weight` times the LM's log10
    probability of its words plus `word_score` per word. Inside a word the LM term is the
    best unigram score of the words the letters so far can still become (smearing), so that
    hypotheses in mid-word compete fairly with those that have paid for a whole word.
    Each frame, the `2 * beam_width` best extensions of the hypotheses are merged (those that
    agree on their LM state, trie node and last token keep the best) and cut to the beam.
    A batch's utterances are searched together, as rows of the same tensors.

    Args:
        lm_path: the ARPA model; its words that `tokens` can spell form the lexicon.
        tokens: the CTC classes' tokens in id order (blank excluded; it is the last class).
            `separator` separates words; tokens that are not characters (the special
            `[PAD]`-style ones) are never emitted.
        beam_width: hypotheses kept per frame.
        token_beam: the frame's most probable classes each hypothesis may extend with.
        lm_weight: weight of the LM's log10 probability against the acoustic log-probability.
        word_score: added per word (positive: fewer deletions; negative: fewer insertions).
        beam_threshold: hypotheses scoring this far below the best are dropped.
    """

    def __init__(
        self,
        lm_path,
        tokens,
        separator=" ",
        beam_width=128,
        token_beam=8,
        lm_weight=2.0,
        word_score=1.0,
        beam_threshold=25.0,
    ):
        super().__init__(name="lexicon_search")
        tokens = list(tokens)
        if separator not in tokens:
            raise ValueError(f"the word separator {separator!r} is not one of the tokens")
        if int(beam_width) < 1 or int(token_beam) < 1:
            raise ValueError(
                f"beam_width and token_beam must be >= 1, got {beam_width}, {token_beam}"
            )
        grams = read_arpa(lm_path)
        if (EOS,) not in grams:
            raise DataError(f"{lm_path}: no 1-gram for {EOS}, which ends every sentence")
        self.order = max(len(gram) for gram in grams)
        vocabulary = sorted({word for gram in grams for word in gram} | {BOS, EOS})
        index = {word: i for i, word in enumerate(vocabulary)}
        ngrams = _ngram_tables(grams, index, lm_path)

        self.num_classes = len(tokens) + 1  # blank last
        self._blank, self._separator = len(tokens), tokens.index(separator)
        spellable = {t for t in tokens if len(t) == 1 and t != separator}
        # The lexicon: the 1-grams' words the tokens spell (every n-gram's words have 1-grams
        # in a well-formed model; the search needs them).
        words = [
            w
            for w in vocabulary
            if w not in (BOS, EOS, UNK) and set(w) <= spellable and (w,) in grams
        ]
        if not words:
            raise DataError(f"{lm_path}: none of the model's words can be spelled with the tokens")
        edges, word_at, smear = _trie(words, tokens, index, grams, self.num_classes)

        def table(values, dtype):
            return tf.Variable(tf.constant(values, dtype), trainable=False)

        self._base, self._eos = ngrams["base"], index[EOS]  # keys' base (`_ngram_tables`)
        self._start = ngrams["start"]  # the state a sentence starts in: after <s>
        self._gram_keys = table(ngrams["keys"], tf.int64)  # sorted
        self._gram_logprob = table(ngrams["logprob"], tf.float32)  # of each key
        self._gram_id = table(ngrams["id"], tf.int32)  # of each key
        self._backoff = table(ngrams["backoff"], tf.float32)  # of each id
        self._suffix = table(ngrams["suffix"], tf.int32)  # of each id
        self._gram_order = table(ngrams["order"], tf.int32)  # of each id
        self._edge_keys = table(edges[:, 0], tf.int64)  # node * num_classes + class, sorted
        self._edge_child = table(edges[:, 1], tf.int32)
        self._word_at = table(word_at, tf.int32)  # node -> id of the word it spells, or -1
        self._smear = table(smear, tf.float32)
        self._words = table(vocabulary, tf.string)
        self.lexicon_size = len(words)
        self.beam_width, self.token_beam = int(beam_width), min(int(token_beam), self.num_classes)
        self.lm_weight, self.word_score = float(lm_weight), float(word_score)
        self.beam_threshold = float(beam_threshold)

    def __call__(self, log_probs, lengths):
        """Transcripts (string `[batch]`) of `[batch, time, num_classes]` CTC
        log-probabilities (blank last), each read to its length."""
        log_probs = tf.convert_to_tensor(log_probs, tf.float32)
        if log_probs.shape.rank != 3 or log_probs.shape[-1] not in (None, self.num_classes):
            raise ValueError(
                f"expected log-probabilities [batch, time, {self.num_classes}], "
                f"got {log_probs.shape.as_list()}"
            )
        return self._search(log_probs, tf.cast(tf.reshape(lengths, [-1]), tf.int32))

    def _lookup(self, keys, table_keys=None):
        """Positions of `keys` in the sorted `table_keys` (the n-grams'), and whether each
        is there."""
        table_keys = self._gram_keys if table_keys is None else table_keys
        flat = tf.reshape(keys, [-1])  # searchsorted wants values as flat as the table
        position = tf.minimum(tf.searchsorted(table_keys, flat), tf.size(table_keys) - 1)
        position = tf.reshape(position, tf.shape(keys))
        return position, tf.equal(tf.gather(table_keys, position), keys)

    def state_of(self, words) -> int:
        """The LM state after `words` (oldest first), as `lm_logprob` takes it: -1 for no
        context; a sentence starts after `["<s>"]`."""
        index = {w: i for i, w in enumerate(self._words.numpy().astype(str))}
        state = tf.constant([-1])
        for word in words:
            _, state = self.lm_logprob(state, tf.constant([index[word]]))
        return int(state[0])

    def lm_logprob(self, state, word):
        """log10 P(word | state) by the ARPA backoff rule, and the state after `word`.

        A state is the id of the longest n-gram (of at most `order - 1` words) that ends
        the words so far, as KenLM's: every longer context the model has no entry for
        backs off at no cost. `state` int `[n]` (-1: no context), `word` int `[n]` word ids.
        """
        word = tf.cast(word, tf.int64)
        logprob = tf.zeros(tf.shape(word), tf.float32)
        found = tf.zeros(tf.shape(word), tf.bool)
        after = tf.fill(tf.shape(word), -1)
        context = tf.cast(state, tf.int32)
        for _ in range(self.order):  # the context, then ever shorter suffixes of it
            key = (tf.cast(context, tf.int64) + 1) * self._base + word + 1
            position, hit = self._lookup(key)
            hit &= ~found
            logprob += tf.where(hit, tf.gather(self._gram_logprob, position), 0.0)
            after = tf.where(hit, tf.gather(self._gram_id, position), after)
            # Not followed by the word: the context's backoff weight, and one word less.
            backs_off = ~found & ~hit & (context >= 0)
            listed = tf.maximum(context, 0)
            logprob += tf.where(backs_off, tf.gather(self._backoff, listed), 0.0)
            context = tf.where(backs_off, tf.gather(self._suffix, listed), context)
            found |= hit
        # A state holds at most order - 1 words: after a full-order n-gram, its suffix.
        full = tf.gather(self._gram_order, tf.maximum(after, 0)) == self.order
        after = tf.where(full, tf.gather(self._suffix, tf.maximum(after, 0)), after)
        return logprob, after

    def _search(self, log_probs, lengths):
        """The best transcripts of a batch's CTC log-probabilities; its utterances advance
        together, a frame at a time, each hypothesis a row of `[batch, beam]` tensors."""
        beam, classes, tokens = self.beam_width, self.num_classes, self.token_beam
        width = beam * tokens  # candidates per utterance and frame
        shortlist = min(width, 2 * beam)  # the best of them, merged and cut to the beam
        batch = tf.shape(log_probs)[0]
        # A length beyond the frames (a client's `length` larger than its waveform) reads
        # to the last frame, where its closing frame goes.
        lengths = tf.clip_by_value(lengths, 0, tf.shape(log_probs)[1])
        never = tf.constant(-np.inf, tf.float32)
        # Transcripts end without a space, but every word ends with one: a closing frame
        # that is surely the separator, at each utterance's end, lets the last word end.
        frames = tf.shape(log_probs)[1] + 1
        log_probs = tf.pad(log_probs, [[0, 0], [0, 1], [0, 0]])
        closing = tf.one_hot(self._separator, classes, on_value=0.0, off_value=-1e9)
        at_end = tf.one_hot(lengths, frames, on_value=True, off_value=False, dtype=tf.bool)
        log_probs = tf.where(at_end[:, :, None], closing, log_probs)

        score = tf.tile(tf.concat([[0.0], tf.fill([beam - 1], never)], 0)[None], [batch, 1])
        node = tf.zeros([batch, beam], tf.int32)  # trie node of the word in progress; 0: root
        context = tf.fill([batch, beam], self._start)  # LM state (`lm_logprob`)
        last = tf.fill([batch, beam], self._blank)  # token of the previous frame
        text = tf.fill([batch, beam], "")
        utterance = tf.broadcast_to(tf.range(batch, dtype=tf.int64)[:, None], [batch, shortlist])
        rank = tf.range(shortlist)[None]

        def step(t, score, node, context, last, text):
            frame_logprob, token = tf.math.top_k(log_probs[:, t], tokens)
            token = tf.broadcast_to(token[:, None], [batch, beam, tokens])
            parent_node = tf.broadcast_to(node[:, :, None], tf.shape(token))
            separator = token == self._separator
            # A new letter: not blank and not the previous frame's token repeated.
            emits = (token != self._blank) & (token != last[:, :, None])
            position, edge = self._lookup(
                tf.cast(parent_node, tf.int64) * classes + tf.cast(token, tf.int64),
                self._edge_keys,
            )
            child = tf.where(edge, tf.gather(self._edge_child, position), -1)
            word = tf.gather(self._word_at, node)
            smear = tf.gather(self._smear, node)
            ends_word = emits & separator & (parent_node != 0)
            word_logprob, word_state = self.lm_logprob(
                tf.reshape(context, [-1]), tf.reshape(tf.maximum(word, 0), [-1])
            )
            word_state = tf.reshape(word_state, [batch, beam])
            word_gain = (
                self.lm_weight * (tf.reshape(word_logprob, [batch, beam]) - smear) + self.word_score
            )
            letter_gain = self.lm_weight * (
                tf.gather(self._smear, tf.maximum(child, 0)) - smear[:, :, None]
            )
            valid = tf.where(
                emits,
                tf.where(separator, (parent_node == 0) | (word >= 0)[:, :, None], child >= 0),
                True,
            )
            gain = tf.where(
                ends_word, word_gain[:, :, None], tf.where(emits & ~separator, letter_gain, 0.0)
            )
            candidate = tf.where(valid, score[:, :, None] + frame_logprob[:, None] + gain, never)
            next_node = tf.where(emits, tf.where(separator, 0, child), parent_node)
            next_node = tf.where(valid, next_node, 0)

            # Each utterance's candidates best first; of those in the same state (LM
            # state, trie node, last token) only the best survives.
            candidate = tf.reshape(candidate, [batch, width])
            ranked_score, ranked = tf.math.top_k(candidate, shortlist)

            def in_rank_order(values):
                return tf.gather(tf.reshape(values, [batch, width]), ranked, batch_dims=1)

            parent = ranked // tokens
            ended = in_rank_order(ends_word)
            parent_word = tf.gather(word, parent, batch_dims=1)
            next_context = tf.where(
                ended,
                tf.gather(word_state, parent, batch_dims=1),
                tf.gather(context, parent, batch_dims=1),
            )
            next_node = in_rank_order(next_node)
            next_last = in_rank_order(token)
            state = tf.stack(
                [
                    utterance,
                    tf.cast(next_context, tf.int64),
                    tf.cast(next_node, tf.int64),
                    tf.cast(next_last, tf.int64),
                ],
                -1,
            )
            states, group = tf.raw_ops.UniqueV2(x=tf.reshape(state, [-1, 4]), axis=[0])
            order = tf.range(tf.size(group))
            first = tf.math.unsorted_segment_min(order, group, tf.shape(states)[0])
            is_first = tf.reshape(tf.equal(tf.gather(first, group), order), [batch, shortlist])
            # The best `beam` distinct states, best first (the rest, if any, are dead).
            keep = tf.argsort(tf.where(is_first, rank, rank + shortlist), axis=1)[:, :beam]

            def kept(values):
                return tf.gather(values, keep, batch_dims=1)

            new_score = tf.where(kept(is_first), kept(ranked_score), never)
            new_score = tf.where(
                new_score < new_score[:, :1] - self.beam_threshold, never, new_score
            )
            parent_text = tf.gather(text, kept(parent), batch_dims=1)
            new_word = tf.gather(self._words, tf.maximum(kept(parent_word), 0))
            new_text = tf.where(
                kept(ended), tf.strings.join([parent_text, new_word], " "), parent_text
            )
            going = (t <= lengths)[:, None]

            def advance(new, old):
                """`new`, but what it was for utterances past their closing frame."""
                return tf.ensure_shape(tf.where(going, new, old), old.shape)

            return (
                t + 1,
                advance(new_score, score),
                advance(kept(next_node), node),
                advance(kept(next_context), context),
                advance(kept(next_last), last),
                advance(new_text, text),
            )

        _, score, node, context, _, text = tf.while_loop(
            lambda t, *_: t < frames, step, [0, score, node, context, last, text]
        )
        ending, _ = self.lm_logprob(tf.reshape(context, [-1]), tf.fill([batch * beam], self._eos))
        final = score + self.lm_weight * tf.reshape(ending, [batch, beam])
        final = tf.where(node == 0, final, never)
        best = tf.argmax(final, axis=1, output_type=tf.int32)
        found = tf.reduce_max(final, axis=1) > never
        return tf.where(found, tf.strings.strip(tf.gather(text, best, batch_dims=1)), "")


def _ngram_tables(grams, index, path) -> dict:
    """The n-grams as the search's tables. Each n-gram has an id (its rank, shortest
    first) and a key, (id of its context + 1) * (words + 1) + its last word's id + 1 (the
    context of a 1-gram is -1): exact and far inside int64 whatever the order or vocabulary.
    Returns the sorted keys with each key's log10 probability and id; per id its backoff
    weight, its order and `suffix`, the id of its longest proper suffix the model has (-1:
    none); `start`, the id of the 1-gram `<s>`; and the keys' `base`."""
    base = len(index) + 1
    ids = {gram: i for i, gram in enumerate(sorted(grams, key=len))}
    keys = np.empty(len(ids), np.int64)
    suffix = np.empty(len(ids), np.int32)
    for gram, i in ids.items():
        context = gram[:-1]
        if context and context not in ids:
            raise DataError(
                f"{path}: the n-gram '{' '.join(gram)}' has no entry for its context "
                f"'{' '.join(context)}' (not a backoff model)"
            )
        keys[i] = (ids.get(context, -1) + 1) * base + index[gram[-1]] + 1
        shorter = gram[1:]
        while shorter and shorter not in ids:
            shorter = shorter[1:]
        suffix[i] = ids[shorter] if shorter else -1
    scores = np.array([grams[gram] for gram in ids], np.float32)
    ranked = np.argsort(keys)
    return {
        "keys": keys[ranked],
        "logprob": scores[ranked, 0],
        "id": ranked.astype(np.int32),
        "backoff": scores[:, 1],
        "suffix": suffix,
        "order": np.array([len(gram) for gram in ids], np.int32),
        "start": ids.get((BOS,), -1),
        "base": base,
    }


def _trie(words, tokens, index, grams, num_classes):
    """The lexicon's letter trie: sorted edges `[node * num_classes + class, child]`, the
    word id each node spells (or -1), and each node's best unigram log10 probability
    among the words below it (0 at the root)."""
    token_id = {t: i for i, t in enumerate(tokens)}
    children, word_at, smear = [{}], [-1], [-np.inf]
    for word in words:
        unigram, node = grams[(word,)][0], 0
        for char in word:
            step = children[node]
            if token_id[char] not in step:
                step[token_id[char]] = len(children)
                children.append({})
                word_at.append(-1)
                smear.append(-np.inf)
            node = step[token_id[char]]
            smear[node] = max(smear[node], unigram)
        word_at[node] = index[word]
    smear[0] = 0.0
    edges = sorted(
        (node * num_classes + token, child)
        for node, step in enumerate(children)
        for token, child in step.items()
    )
    return np.array(edges, np.int64), np.array(word_at, np.int32), np.array(smear, np.float32)


def _place(source, target) -> Path:
    """Copies `source` to `target` atomically: a killed run never leaves half a model that
    later runs would take for a whole one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target
