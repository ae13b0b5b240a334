"""RecurrentBackbone: learning, masking, step-wise use and serialization."""

import keras
import numpy as np
import pytest
from toy import make_sequences, recall_model

from shared.backbones import RecurrentBackbone

CELLS = ["rnn", "lstm", "gru"]
SHAPES = {
    "uni": dict(num_layers=1),
    "bi": dict(num_layers=1, bidirectional=True),
    "stacked-residual": dict(num_layers=3, residual=True, layer_norm=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_and_shape_learns_delayed_recall(cell, shape):
    x, y = make_sequences(1024, seed=1)
    vx, vy = make_sequences(256, seed=2)
    backbone = RecurrentBackbone(cell, 24, return_sequences=False, **SHAPES[shape])
    model = recall_model(backbone)
    model.compile(
        keras.optimizers.Adam(0.01, clipnorm=1.0),  # unclipped, 3 SimpleRNN layers can diverge
        keras.losses.SparseCategoricalCrossentropy(True),
        metrics=["accuracy"],
    )
    # The Elman cell learns the recall more slowly: in 6 epochs some seeds stall at 73 %.
    model.fit(x, y, batch_size=32, epochs=10 if cell == "rnn" else 6, verbose=0)
    accuracy = np.mean(np.argmax(model.predict(vx, verbose=0), -1) == vy)
    assert accuracy > 0.9, f"{cell}/{shape}: {accuracy:.2f} (chance 0.25)"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(cell="lstm", bidirectional=True, num_layers=2, residual=True, layer_norm=True),
        dict(cell="gru", return_sequences=False, bidirectional=True),
        dict(cell="rnn", num_layers=3, residual=True, merge_mode="sum", bidirectional=True),
    ],
)
def test_padded_steps_never_change_an_output(kwargs):
    backbone = RecurrentBackbone(units=8, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5)).astype("float32")
    mask = np.array([[1] * 3 + [0] * 3, [1] * 6, [1] * 1 + [0] * 5], bool)
    other = x.copy()
    other[~mask] = rng.normal(size=(int((~mask).sum()), 5)) * 100
    np.testing.assert_allclose(backbone(x, mask=mask), backbone(other, mask=mask), atol=1e-6)
    if backbone.return_sequences:
        assert np.all(np.asarray(backbone(x, mask=mask))[~mask] == 0)


@pytest.mark.parametrize("cell", CELLS)
def test_step_by_step_equals_whole_sequence(cell):
    backbone = RecurrentBackbone(cell, 8, num_layers=2, residual=True, layer_norm=True)
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    whole = backbone(x)
    states = backbone.initial_states(2)
    steps = []
    for t in range(5):
        out, states = backbone.step(x[:, t], states)
        steps.append(out)
    np.testing.assert_allclose(np.stack(steps, 1), whole, atol=1e-5)


def test_output_width_and_final_state_shape():
    x = np.zeros((2, 7, 3), "float32")
    assert RecurrentBackbone("gru", 16, bidirectional=True)(x).shape == (2, 7, 32)
    assert RecurrentBackbone("gru", 16, bidirectional=True, merge_mode="sum")(x).shape == (2, 7, 16)
    assert RecurrentBackbone("lstm", 16, return_sequences=False)(x).shape == (2, 16)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="Unknown cell 'transformer'"):
        RecurrentBackbone("transformer")
    with pytest.raises(ValueError, match="merge_mode"):
        RecurrentBackbone("gru", merge_mode="max")


def test_save_and_load_round_trip(tmp_path):
    backbone = RecurrentBackbone(
        "lstm",
        8,
        num_layers=2,
        bidirectional=True,
        residual=True,
        layer_norm=True,
        dropout=0.1,
        use_cudnn=False,
    )
    model = recall_model(backbone)
    x, _ = make_sequences(4, seed=0)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, atol=1e-6)
    config = restored.layers[2].get_config()
    assert config["cell"] == "lstm" and config["residual"] and config["use_cudnn"] is False


class _SeenEverything(dict):
    """Keras' map of serialised objects when every `id()` is one freed and reused."""

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return {}


def test_bidirectional_layers_are_built_apart_while_loading():
    """`load_model` shares objects by `id()`; a reused one must not merge two layers."""
    from keras.src.backend.common import global_state
    from keras.src.saving import serialization_lib

    with serialization_lib.ObjectSharingScope():
        global_state.set_global_attribute("shared_objects/id_to_config_map", _SeenEverything())
        backbone = RecurrentBackbone("gru", 4, num_layers=2, bidirectional=True, use_cudnn=False)
    directions = [(bi.forward_layer, bi.backward_layer) for bi in backbone.recurrent_layers]
    assert [(f.go_backwards, b.go_backwards) for f, b in directions] == [(False, True)] * 2
    assert len({id(layer) for pair in directions for layer in pair}) == 4
