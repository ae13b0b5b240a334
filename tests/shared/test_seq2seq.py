import itertools
import os
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from shared.backbones import RecurrentBackbone  # noqa: E402
from shared.seq2seq import (  # noqa: E402
    AttentiveDecoder,
    beam_search,
    decode,
    decoder_step_fn,
    gnmt_length_penalty,
    greedy_decode,
    sequence_log_prob,
)

PAD, UNK, BOS, EOS = 0, 1, 2, 3
DIGITS = range(4, 12)  # eight content tokens
VOCAB = 12


# -- untrained decoder: step-wise decoding reproduces teacher forcing -----------------------
def memory_batch(seed=0):
    rng = np.random.default_rng(seed)
    memory = rng.normal(size=(3, 5, 10)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
    target_in = np.array([[BOS, 5, 6, 7, 8], [BOS, 4, 9, 0, 0], [BOS, 11, 0, 0, 0]], np.int32)
    return memory, mask, target_in


@pytest.mark.parametrize(
    "cell, attention, options",
    [
        ("lstm", "bahdanau", {}),
        ("gru", "luong", {"num_layers": 2, "residual": True, "layer_norm": True}),
        ("rnn", "bahdanau", {"num_layers": 2, "layer_norm": True}),
        ("lstm", "luong", {"num_layers": 2, "residual": True}),
        ("lstm", "bahdanau", {"attentional_layer": True}),
    ],
)
def test_step_matches_teacher_forcing(cell, attention, options):
    keras.utils.set_random_seed(0)
    decoder = AttentiveDecoder(VOCAB, 8, cell=cell, units=16, attention=attention, **options)
    memory, mask, target_in = memory_batch()
    logits = np.asarray(decoder(target_in, memory, mask))
    states = decoder.initial_states(memory, mask)
    assert len(states) == decoder.num_layers
    assert all(len(layer) == (2 if cell == "lstm" else 1) for layer in states)
    context = decoder.decoding_context(memory, mask)
    for t in range(target_in.shape[1]):
        step_logits, states, weights = decoder.step(tf.constant(target_in[:, t]), states, *context)
        valid = target_in[:, t] != PAD
        np.testing.assert_allclose(np.asarray(step_logits)[valid], logits[valid, t], atol=1e-5)
        assert np.all(np.asarray(weights)[~mask] == 0.0)


def test_logits_carry_the_target_mask_and_ignore_padded_memory():
    keras.utils.set_random_seed(0)
    decoder = AttentiveDecoder(VOCAB, 8, cell="gru", units=16)
    memory, mask, target_in = memory_batch()
    logits = decoder(target_in, memory, mask)
    np.testing.assert_array_equal(np.asarray(logits._keras_mask), target_in != PAD)
    changed = memory.copy()
    changed[~mask] = 50.0
    np.testing.assert_allclose(decoder(target_in, changed, mask), logits, atol=1e-6)


def test_decoder_and_decode_work_without_a_memory_mask():
    keras.utils.set_random_seed(0)
    decoder = AttentiveDecoder(VOCAB, 8, cell="gru", units=16)
    memory, _, target_in = memory_batch()
    full_mask = np.ones(memory.shape[:2], bool)
    np.testing.assert_allclose(
        decoder(target_in, memory), decoder(target_in, memory, full_mask), atol=1e-6
    )
    np.testing.assert_allclose(
        decoder(target_in, memory, memory_mask=None), decoder(target_in, memory), atol=1e-6
    )
    unmasked = decode(decoder, memory, None, BOS, EOS, 4, beam_width=2)
    masked = decode(decoder, memory, full_mask, BOS, EOS, 4, beam_width=2)
    np.testing.assert_array_equal(unmasked[0], masked[0])


def test_decoding_an_unbuilt_decoder_or_with_no_beam_is_refused_clearly():
    decoder = AttentiveDecoder(VOCAB, 8, cell="gru", units=16, attention="luong")
    memory, mask, target_in = memory_batch()
    with pytest.raises(ValueError, match="decoder is not built"):
        decode(decoder, memory, mask, BOS, EOS, 4)
    decoder(target_in, memory, mask)
    with pytest.raises(ValueError, match="beam_width must be at least 1, got 0"):
        decode(decoder, memory, mask, BOS, EOS, 4, beam_width=0)


def test_mixed_precision_decoder_gives_float32_logits():
    keras.utils.set_random_seed(0)
    decoder = AttentiveDecoder(VOCAB, 8, cell="lstm", units=16, dtype="mixed_float16")
    memory, mask, target_in = memory_batch()
    logits = decoder(target_in, memory, mask)
    assert logits.dtype == "float32" and np.isfinite(np.asarray(logits)).all()
    tokens, lengths, _ = decode(decoder, memory, mask, BOS, EOS, 4, beam_width=2)
    assert tokens.shape[0] == 3 and np.all(np.asarray(lengths) >= 1)


def test_decoder_config_round_trip():
    decoder = AttentiveDecoder(
        VOCAB,
        8,
        cell="gru",
        units=16,
        num_layers=2,
        attention="luong",
        dropout=0.1,
        attentional_layer=True,
    )
    clone = AttentiveDecoder.from_config(decoder.get_config())
    assert clone.get_config() == decoder.get_config()
    with pytest.raises(ValueError, match="Unknown attention"):
        AttentiveDecoder(VOCAB, 8, attention="dot")


# -- search on a synthetic model whose best sequence is known by enumeration ---------------
SYN_VOCAB, SYN_END, SYN_START, SYN_MAX = 5, 1, 2, 3


def synthetic_model(seed=3):
    """A step_fn whose logits depend on the whole history (through the state) and the context."""
    rng = np.random.default_rng(seed)
    table = tf.constant(rng.normal(scale=2.0, size=(SYN_VOCAB, SYN_VOCAB)), tf.float32)
    history = tf.constant(rng.normal(size=(SYN_VOCAB,)), tf.float32)

    def step_fn(tokens, state, context):
        logits = tf.gather(table, tokens) + tf.sin(state["total"] * history) + context
        new_state = {"total": state["total"] + tf.cast(tokens, tf.float32)[:, None] * 1.7}
        return logits, new_state

    context = tf.constant(rng.normal(size=(2, SYN_VOCAB)), tf.float32)
    state = {"total": tf.zeros((2, 1))}
    return step_fn, state, context


def all_hypotheses():
    """Every output the search can produce within SYN_MAX steps (pad never, end ends it)."""
    tokens = range(1, SYN_VOCAB)
    for length in range(1, SYN_MAX + 1):
        for sequence in itertools.product(tokens, repeat=length):
            if SYN_END not in sequence[:-1] and (sequence[-1] == SYN_END or length == SYN_MAX):
                yield sequence


def brute_force_best(alpha):
    """The best hypothesis per example by exhaustive teacher-forced scoring."""
    step_fn, state, context = synthetic_model()
    best = []
    for example in range(2):
        scored = []
        for sequence in all_hypotheses():
            example_state = {"total": state["total"][example : example + 1]}
            previous, total = SYN_START, 0.0
            for token in sequence:
                logits, example_state = step_fn(
                    tf.constant([previous]), example_state, context[example : example + 1]
                )
                total += float(tf.nn.log_softmax(logits)[0, token])
                previous = token
            normalised = total / float(gnmt_length_penalty(len(sequence), alpha))
            scored.append((normalised, sequence))
        best.append(max(scored))
    return best


def padded(tokens, length=SYN_MAX):
    """`tokens` right-padded with 0 to at least `length` columns."""
    tokens = np.asarray(tokens)
    return np.pad(tokens, ((0, 0), (0, max(0, length - tokens.shape[1]))))


def same_tokens(tokens, target):
    """Row-wise equality of two 0-padded token matrices of any widths."""
    width = max(np.shape(tokens)[1], np.shape(target)[1])
    return np.all(padded(tokens, width) == padded(target, width), axis=1)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_wide_beam_finds_the_exhaustive_best(alpha):
    step_fn, state, context = synthetic_model()
    # 16 beams hold every hypothesis of 3 steps over 3 real tokens + end, so the search is exact.
    tokens, lengths, scores = beam_search(
        step_fn, state, context, 2, SYN_START, SYN_END, SYN_MAX, beam_width=16, length_penalty=alpha
    )
    for example, (best_score, best_sequence) in enumerate(brute_force_best(alpha)):
        assert int(lengths[example]) == len(best_sequence)
        assert tuple(padded(tokens)[example, : len(best_sequence)]) == best_sequence
        assert np.all(padded(tokens)[example, len(best_sequence) :] == PAD)
        assert float(scores[example]) == pytest.approx(best_score, abs=1e-5)


def test_beam_outscores_myopic_greedy():
    step_fn, state, context = synthetic_model()
    greedy = greedy_decode(step_fn, state, context, 2, SYN_START, SYN_END, SYN_MAX)
    beam = beam_search(
        step_fn, state, context, 2, SYN_START, SYN_END, SYN_MAX, beam_width=4, length_penalty=0.0
    )
    assert np.all(np.asarray(beam[2]) >= np.asarray(greedy[2]) - 1e-5)
    # In this model greedy's first token leads to a poor sequence for example 0.
    assert float(beam[2][0]) > float(greedy[2][0]) + 0.5


def test_greedy_picks_the_argmax_and_sums_its_log_probs():
    step_fn, state, context = synthetic_model()
    tokens, lengths, scores = greedy_decode(step_fn, state, context, 2, SYN_START, SYN_END, 6)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    for example in range(2):
        example_state = {"total": state["total"][example : example + 1]}
        previous, total = SYN_START, 0.0
        for position in range(lengths[example]):
            logits, example_state = step_fn(
                tf.constant([previous]), example_state, context[example : example + 1]
            )
            log_probs = np.array(tf.nn.log_softmax(logits))[0]
            log_probs[PAD] = -np.inf
            assert tokens[example, position] == np.argmax(log_probs)
            total += log_probs[tokens[example, position]]
            previous = tokens[example, position]
        finished = tokens[example, lengths[example] - 1] == SYN_END
        assert finished or lengths[example] == 6
        assert np.all(tokens[example, lengths[example] :] == PAD)
        assert float(scores[example]) == pytest.approx(total, abs=1e-5)


def test_searches_run_in_tf_function_with_a_tensor_max_length():
    step_fn, state, context = synthetic_model()

    @tf.function
    def search(max_length):
        greedy = greedy_decode(step_fn, state, context, 2, SYN_START, SYN_END, max_length)
        beam = beam_search(step_fn, state, context, 2, SYN_START, SYN_END, max_length, beam_width=1)
        return greedy, beam

    (greedy_tokens, greedy_lengths, greedy_scores), beam = search(tf.constant(2))
    assert greedy_tokens.shape[1] <= 2 and np.all(np.asarray(greedy_lengths) <= 2)
    np.testing.assert_array_equal(beam[0], greedy_tokens)
    np.testing.assert_array_equal(beam[1], greedy_lengths)
    expected = np.asarray(greedy_scores) / np.asarray(gnmt_length_penalty(greedy_lengths, 0.6))
    np.testing.assert_allclose(beam[2], expected, rtol=1e-5)
    eager_tokens, _, _ = greedy_decode(step_fn, state, context, 2, SYN_START, SYN_END, 2)
    np.testing.assert_array_equal(eager_tokens, greedy_tokens)


def test_decoding_exports_in_a_saved_model(tmp_path):
    keras.utils.set_random_seed(0)
    _, encoder, decoder = build_reverser("luong", "lstm")

    def serve(source):
        memory, memory_mask = encoder(source)
        max_length = tf.shape(source)[1] + 2
        tokens, lengths, scores = decode(
            decoder, memory, memory_mask, BOS, EOS, max_length, beam_width=3
        )
        return {"tokens": tokens, "lengths": lengths, "scores": scores}

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.track(decoder)
    archive.add_endpoint(
        "serving_default", serve, input_signature=[tf.TensorSpec([None, None], tf.int32)]
    )
    archive.write_out(str(tmp_path / "export"), verbose=False)
    source = np.array([[4, 5, 6, 0, 0, 0], [7, 8, 9, 10, 11, 4]], np.int32)
    expected = serve(tf.constant(source))
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    got = reloaded.signatures["serving_default"](source=tf.constant(source))
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, atol=1e-6)


# -- a trained encoder-decoder: reversing digit sequences ----------------------------------
def reversal_data(rng, count, exclude=frozenset()):
    """Sources, decoder inputs and decoder targets for `count` distinct sequences."""
    sequences = set()
    while len(sequences) < count:
        sequence = tuple(int(token) for token in rng.choice(DIGITS, size=rng.integers(3, 7)))
        if sequence not in exclude:
            sequences.add(sequence)
    sequences = sorted(sequences)
    source = np.zeros((count, 6), np.int32)
    target_in = np.zeros((count, 7), np.int32)
    target_out = np.zeros((count, 7), np.int32)
    for row, sequence in enumerate(sequences):
        reverse = sequence[::-1]
        source[row, : len(sequence)] = sequence
        target_in[row, : len(sequence) + 1] = (BOS, *reverse)
        target_out[row, : len(sequence) + 1] = (*reverse, EOS)
    return source, target_in, target_out, frozenset(sequences)


def build_reverser(attention, cell):
    source = keras.Input((None,), dtype="int32", name="source")
    target_in = keras.Input((None,), dtype="int32", name="target_in")
    embedded = keras.layers.Embedding(VOCAB, 16, mask_zero=True)(source)
    memory = RecurrentBackbone("rnn", units=32, bidirectional=True)(embedded)
    memory_mask = keras.ops.not_equal(source, PAD)
    decoder = AttentiveDecoder(VOCAB, 16, cell=cell, units=48, attention=attention)
    logits = decoder(target_in, memory, memory_mask)
    model = keras.Model([source, target_in], logits)
    encoder = keras.Model(source, [memory, memory_mask])
    return model, encoder, decoder


@pytest.fixture(scope="module", params=[("bahdanau", "gru"), ("luong", "lstm")], ids=str)
def reverser(request):
    attention, cell = request.param
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    test_source, _, test_target, held_out = reversal_data(rng, 128)
    train_source, train_in, train_out, _ = reversal_data(rng, 1536, exclude=held_out)
    model, encoder, decoder = build_reverser(attention, cell)
    model.compile(
        keras.optimizers.Adam(5e-3, clipnorm=1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # XLA compilation costs more than these few steps gain
    )
    # The logits carry the target mask, so padded positions add nothing to the loss.
    model.fit([train_source, train_in], train_out, batch_size=64, epochs=8, verbose=0)

    @tf.function
    def search(source, beam_width, max_length):
        memory, memory_mask = encoder(source)
        return decode(decoder, memory, memory_mask, BOS, EOS, max_length, beam_width=beam_width)

    return SimpleNamespace(
        model=model,
        encoder=encoder,
        decoder=decoder,
        search=search,
        source=test_source,
        target=test_target,
    )


@pytest.mark.slow
def test_learns_to_reverse_with_greedy_decoding_in_tf_function(reverser):
    tokens, lengths, _ = reverser.search(reverser.source, 1, 8)
    exact = np.mean(same_tokens(tokens, reverser.target))
    assert exact >= 0.9, f"exact match {exact:.2f}"
    np.testing.assert_array_equal(lengths, np.count_nonzero(reverser.target, axis=1))


@pytest.mark.slow
def test_beam_width_one_equals_greedy(reverser):
    memory, memory_mask = reverser.encoder(reverser.source)
    args = (
        decoder_step_fn(reverser.decoder),
        reverser.decoder.initial_states(memory, memory_mask),
        (memory, memory_mask),  # the step_fn also accepts a context without keys
        len(reverser.source),
        BOS,
        EOS,
        8,
    )
    greedy = greedy_decode(*args)
    beam = beam_search(*args, beam_width=1)
    np.testing.assert_array_equal(beam[0], greedy[0])
    np.testing.assert_array_equal(beam[1], greedy[1])


@pytest.mark.slow
def test_beam_scores_at_least_greedy_and_match_teacher_forcing(reverser):
    greedy_tokens, greedy_lengths, greedy_scores = reverser.search(reverser.source, 1, 8)
    tokens, lengths, scores = reverser.search(reverser.source, 4, tf.constant(8))
    greedy_normalised = np.asarray(greedy_scores) / gnmt_length_penalty(greedy_lengths, 0.6)
    assert np.all(np.asarray(scores) >= greedy_normalised - 1e-4)
    memory, memory_mask = reverser.encoder(reverser.source)
    forced = sequence_log_prob(reverser.decoder, memory, memory_mask, tokens, lengths, BOS)
    np.testing.assert_allclose(forced / gnmt_length_penalty(lengths, 0.6), scores, atol=1e-4)
    forced_greedy = sequence_log_prob(
        reverser.decoder, memory, memory_mask, greedy_tokens, greedy_lengths, BOS
    )
    np.testing.assert_allclose(forced_greedy, greedy_scores, atol=1e-4)


@pytest.mark.slow
def test_trained_model_save_and_load_round_trip(reverser, tmp_path):
    _, target_in, _, _ = reversal_data(np.random.default_rng(5), 16)
    source = reverser.source[:16]
    expected = reverser.model.predict([source, target_in], verbose=0)
    path = tmp_path / "reverser.keras"
    reverser.model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict([source, target_in], verbose=0), expected, atol=1e-6
    )
    decoder = next(layer for layer in restored.layers if isinstance(layer, AttentiveDecoder))
    assert decoder.get_config() == reverser.decoder.get_config()
