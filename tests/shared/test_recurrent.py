"""shared.recurrent: the same outputs, states and gradients as Keras' own layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared import recurrent

PAIRS = {
    "rnn": (keras.layers.SimpleRNN, recurrent.SimpleRNN),
    "lstm": (keras.layers.LSTM, recurrent.LSTM),
    "gru": (keras.layers.GRU, recurrent.GRU),
}


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 9, 5)).astype("float32")
    mask = np.ones([4, 9], bool)
    mask[1, 6:] = False
    mask[2, 2:] = False
    return x, mask


def _twins(cell, **kwargs):
    theirs, ours = (kind(7, **kwargs) for kind in PAIRS[cell])
    for layer in (theirs, ours):
        layer.build((None, None, 5))
    ours.set_weights([w + 0.1 for w in theirs.get_weights()])  # nonzero biases too
    theirs.set_weights(ours.get_weights())
    return theirs, ours


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("cell", PAIRS)
def test_outputs_states_and_gradients_match_keras(cell, go_backwards):
    x, mask = _inputs()
    theirs, ours = _twins(cell, return_sequences=True, return_state=True, go_backwards=go_backwards)
    results = []
    for layer in (theirs, ours):
        with tf.GradientTape() as tape:
            tape.watch(x_t := tf.constant(x))
            outputs = layer(x_t, mask=mask)
            loss = sum(tf.reduce_sum(tf.sin(o)) for o in outputs)
        results.append((outputs, tape.gradient(loss, [x_t, *layer.trainable_variables])))
    (their_outputs, their_grads), (our_outputs, our_grads) = results
    expected, got = [*their_outputs, *their_grads], [*our_outputs, *our_grads]
    for theirs_, ours_ in zip(expected, got, strict=True):
        np.testing.assert_allclose(ours_, theirs_, rtol=1e-5, atol=1e-5)


def test_the_loop_sees_projected_inputs(monkeypatch):
    """The fast path is taken: the loop's step gets `3 * units` wide inputs, not the raw 5."""
    widths, step = [], recurrent.GRU._step

    def spy(layer, projected, states):
        widths.append(projected.shape[-1])
        return step(layer, projected, states)

    monkeypatch.setattr(recurrent.GRU, "_step", spy)
    recurrent.GRU(7, return_sequences=True)(np.zeros([2, 3, 5], "float32"))
    assert widths and set(widths) == {21}


def test_cell_dropout_in_training_is_left_to_keras():
    layer = recurrent.LSTM(7, dropout=0.5)
    assert layer._keras_does_it(training=True)
    assert not layer._keras_does_it(training=False)
    assert recurrent.GRU(7, reset_after=False)._keras_does_it(training=False)


@pytest.mark.parametrize("cell", PAIRS)
def test_serialization_round_trip(cell):
    layer = keras.layers.Bidirectional(PAIRS[cell][1](6, return_sequences=True))
    x, mask = _inputs()
    expected = layer(x, mask=mask)
    rebuilt = keras.layers.Bidirectional.from_config(layer.get_config())
    rebuilt.build(x.shape)
    rebuilt.set_weights(layer.get_weights())
    assert type(rebuilt.forward_layer) is PAIRS[cell][1]
    np.testing.assert_allclose(rebuilt(x, mask=mask), expected, rtol=1e-6, atol=1e-6)
