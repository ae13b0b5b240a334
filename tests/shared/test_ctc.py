import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared.backbones import RecurrentBackbone
from shared.ctc import (
    CTCHead,
    blank_index,
    ctc_beam_decode,
    ctc_decode,
    ctc_greedy_decode,
    ctc_loss,
    num_ctc_classes,
)
from shared.vocab import Vocabulary


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def brute_force_nll(label, logits, blank):
    """-log p(label | logits) by summing over every frame path that collapses to it."""
    probs = np.exp(log_softmax(logits.astype(np.float64)))
    steps, classes = probs.shape
    total = 0.0
    for path in itertools.product(range(classes), repeat=steps):
        collapsed = [c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]
        if collapsed == list(label):
            total += np.prod([probs[t, c] for t, c in enumerate(path)])
    return -np.log(total)


def test_loss_matches_hand_computed_two_frame_case():
    # Classes: 0 (pad), 1 ("a"), blank = 2. Label "a" over two frames: paths aa, a-, -a.
    logits = np.array([[[0.0, 1.0, 0.5], [0.0, 0.2, 1.5]]], np.float32)
    p = np.exp(log_softmax(logits[0]))
    a, b = 1, 2
    expected = -np.log(p[0, a] * p[1, a] + p[0, a] * p[1, b] + p[0, b] * p[1, a])
    loss = ctc_loss(tf.constant([[1]]), logits, tf.constant([1]), tf.constant([2]))
    np.testing.assert_allclose(loss.numpy(), [expected], rtol=1e-5)


def test_loss_matches_brute_force_over_all_paths():
    rng = np.random.default_rng(0)
    num_classes = 4  # ids 0, 1, 2 and the blank 3
    assert blank_index(num_classes) == 3
    logits = rng.normal(size=(3, 5, num_classes)).astype(np.float32)
    labels = np.array([[1, 2, 0], [2, 2, 0], [1, 2, 1]])
    label_length = np.array([2, 2, 3])
    logit_length = np.array([5, 4, 5])
    loss = ctc_loss(labels, logits, label_length, logit_length).numpy()
    expected = [
        brute_force_nll(labels[i, : label_length[i]], logits[i, : logit_length[i]], blank=3)
        for i in range(3)
    ]
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


def test_padding_beyond_true_lengths_does_not_change_the_loss():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 5)).astype(np.float32)
    labels = np.array([[1, 2, 0, 0], [3, 0, 0, 0]])
    label_length, logit_length = np.array([2, 1]), np.array([4, 6])
    reference = ctc_loss(labels, logits, label_length, logit_length).numpy()

    noisy_labels = np.array([[1, 2, 3, 1], [3, 2, 2, 2]])
    noisy_logits = logits.copy()
    noisy_logits[0, 4:] = rng.normal(size=(2, 5)) * 10
    got = ctc_loss(noisy_labels, noisy_logits, label_length, logit_length).numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-6)


def test_float16_logits_give_the_float32_loss_and_finite_gradients():
    rng = np.random.default_rng(2)
    logits32 = tf.constant(rng.normal(size=(2, 30, 6)) * 8, tf.float32)
    logits16 = tf.cast(logits32, tf.float16)
    args = (tf.constant([[1, 2, 3], [4, 4, 0]]), tf.constant([3, 2]), tf.constant([30, 20]))
    with tf.GradientTape() as tape:
        tape.watch(logits16)
        loss16 = ctc_loss(args[0], logits16, *args[1:])
    gradient = tape.gradient(loss16, logits16)
    loss32 = ctc_loss(args[0], tf.cast(logits16, tf.float32), *args[1:])
    assert loss16.dtype == tf.float32
    np.testing.assert_allclose(loss16.numpy(), loss32.numpy(), rtol=1e-6)
    assert np.all(np.isfinite(gradient.numpy()))


def two_symbol_logits(p_symbol):
    """Two frames over classes 0–4 + blank 5 where only symbol 4 and the blank are likely."""
    probs = np.full((1, 2, 6), 1e-12)
    probs[..., 4], probs[..., 5] = p_symbol, 1 - p_symbol
    return tf.constant(np.log(probs), tf.float32)


def test_beam_search_sums_paths_where_greedy_takes_the_best_frame():
    # Best path is blank-blank ("" at 0.36); the labelling [4] has 0.16 + 0.24 + 0.24 = 0.64.
    logits, lengths = two_symbol_logits(0.4), tf.constant([2])
    ids, length = ctc_greedy_decode(logits, lengths)
    assert ids.shape == (1, 0) and length.numpy().tolist() == [0]
    ids, length = ctc_beam_decode(logits, lengths, beam_width=4)
    assert ids.numpy().tolist() == [[4]] and length.numpy().tolist() == [1]


def test_decoders_merge_repeats_drop_blanks_and_pad_with_zero():
    blank = 5
    frames = [[4, 4, blank, 4, blank], [1, 2, 2, blank, blank]]
    logits = tf.one_hot(frames, 6) * 10.0
    lengths = tf.constant([5, 3])
    for method in ("greedy", "beam"):
        ids, length = ctc_decode(logits, lengths, method=method)
        assert ids.dtype == tf.int32 and length.dtype == tf.int32
        assert ids.numpy().tolist() == [[4, 4], [1, 2]], method
        assert length.numpy().tolist() == [2, 2]
    with pytest.raises(ValueError, match="method"):
        ctc_decode(logits, lengths, method="viterbi")


def test_decoders_never_emit_padding():
    # Frame 2 prefers class 0 (padding); decoders must choose the next best class.
    logits = tf.constant([[[0.0, 0, 0, 0, 3, 0], [5.0, 0, 0, 0, 0, 4], [0.0, 0, 0, 0, 3, 0]]])
    for decode in (ctc_greedy_decode, ctc_beam_decode):
        ids, _ = decode(logits, tf.constant([3]))
        assert ids.numpy().tolist() == [[4, 4]]


def test_decoders_inside_tf_function_ignore_frames_beyond_length():
    spec = [tf.TensorSpec([None, None, 6], tf.float32), tf.TensorSpec([None], tf.int32)]
    greedy = tf.function(ctc_greedy_decode, input_signature=spec)
    beam = tf.function(lambda x, n: ctc_beam_decode(x, n, beam_width=3), input_signature=spec)
    logits = tf.one_hot([[4, 5, 3, 3, 2], [1, 1, 1, 1, 1]], 6) * 10.0
    for decode in (greedy, beam):
        ids, length = decode(logits, tf.constant([3, 0]))
        assert ids.numpy().tolist() == [[4, 3], [0, 0]]
        assert length.numpy().tolist() == [2, 0]


def test_decoders_return_nothing_for_an_empty_batch():
    spec = [tf.TensorSpec([None, None, 6], tf.float32), tf.TensorSpec([None], tf.int32)]
    for method in ("greedy", "beam"):
        decode = functools.partial(ctc_decode, method=method)
        for run in (decode, tf.function(decode, input_signature=spec)):
            ids, length = run(tf.zeros((0, 5, 6)), tf.zeros((0,), tf.int32))
            assert ids.shape[0] == 0 and length.shape == (0,), method


def test_ctc_head_serializes_and_keeps_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        head = CTCHead(num_ctc_classes(9), name="head")
        logits = head(tf.zeros((2, 3, 4)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.shape == (2, 3, 10) and logits.dtype == tf.float32
    assert head.blank_index == 9
    clone = CTCHead.from_config(head.get_config())
    assert clone.num_classes == 10


# -- a model learns a toy alignment task -------------------------------------------------
SYMBOLS = "abcde"
NOISE_DIMS = 3


def alignment_examples(vocab, count, seed):
    """Each label symbol is shown as a one-hot for 1–3 frames; 0–2 blank or noise frames
    lie between symbols (at least one between equal neighbours), before and after."""
    rng = np.random.default_rng(seed)
    width = len(SYMBOLS) + NOISE_DIMS
    max_frames = 2 + 4 * 3 + 3 * 2 + 2
    features = np.zeros((count, max_frames, width), np.float32)
    labels = np.zeros((count, 4), np.int32)
    label_length = rng.integers(1, 5, count)
    frame_length = np.zeros(count, np.int32)

    def gap(frames, minimum=0):
        for _ in range(rng.integers(minimum, 3)):
            frame = np.zeros(width, np.float32)
            if rng.random() < 0.5:  # a noise frame rather than silence
                frame[len(SYMBOLS) :] = rng.uniform(0.5, 1.0, NOISE_DIMS)
            frames.append(frame)

    texts = []
    for row in range(count):
        text = "".join(rng.choice(list(SYMBOLS), label_length[row]))
        texts.append(text)
        frames = []
        gap(frames)
        for index, symbol in enumerate(text):
            if index:
                gap(frames, minimum=1 if symbol == text[index - 1] else 0)
            for _ in range(rng.integers(1, 4)):
                frames.append(np.eye(width, dtype=np.float32)[SYMBOLS.index(symbol)])
        gap(frames)
        frame_length[row] = len(frames)
        features[row, : len(frames)] = np.stack(frames)
        features[row, : len(frames)] += rng.normal(0, 0.1, (len(frames), width))
    labels = vocab.encode_padded(tf.constant(texts), length=4).numpy()
    return {"features": features, "length": frame_length}, {
        "labels": labels,
        "label_length": label_length.astype(np.int32),
    }


class ToyRecognizer(keras.Model):
    def __init__(self, num_classes):
        super().__init__()
        self.backbone = RecurrentBackbone("gru", units=16, bidirectional=True)
        self.head = CTCHead(num_classes)

    def call(self, inputs, training=None):
        features = inputs["features"]
        mask = tf.sequence_mask(inputs["length"], tf.shape(features)[1])
        return self.head(self.backbone(features, mask=mask, training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return tf.reduce_mean(ctc_loss(y["labels"], y_pred, y["label_length"], x["length"]))


@pytest.mark.slow
def test_small_bigru_learns_toy_alignment_and_both_decoders_recover_labels():
    vocab = Vocabulary(list(SYMBOLS), level="char")
    x_train, y_train = alignment_examples(vocab, 512, seed=0)
    x_test, y_test = alignment_examples(vocab, 100, seed=1)
    model = ToyRecognizer(num_ctc_classes(vocab.size))
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    history = model.fit(x_train, y_train, batch_size=32, epochs=6, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]

    logits = model.predict(x_test, batch_size=100, verbose=0)
    labels = y_test["labels"]
    for method in ("greedy", "beam"):
        ids, lengths = ctc_decode(logits, x_test["length"], method=method)
        ids = ids.numpy()
        width = max(ids.shape[1], labels.shape[1])
        ids = np.pad(ids, [(0, 0), (0, width - ids.shape[1])])
        padded = np.pad(labels, [(0, 0), (0, width - labels.shape[1])])
        exact = np.all(ids == padded, axis=1) & (lengths.numpy() == y_test["label_length"])
        assert exact.mean() >= 0.95, (method, exact.mean())


def test_an_utterance_too_short_for_its_label_costs_nothing_and_spares_the_batch():
    rng = np.random.default_rng(3)
    logits = tf.constant(rng.normal(size=(2, 4, 4)), tf.float32)
    labels = tf.constant([[1, 1, 2], [1, 2, 0]])  # "aab" needs 4 frames, "ab" only 2
    logit_length = tf.constant([3, 4])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = ctc_loss(labels, logits, tf.constant([3, 2]), logit_length)
        total = tf.reduce_sum(loss)
    gradient = tape.gradient(total, logits).numpy()
    alone = ctc_loss(labels[1:], logits[1:], tf.constant([2]), logit_length[1:])
    assert loss.numpy()[0] == 0.0 and np.all(gradient[0] == 0.0)
    np.testing.assert_allclose(loss.numpy()[1], alone.numpy()[0], rtol=1e-6)
