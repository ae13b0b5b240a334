import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from shared.attention import (  # noqa: E402
    BahdanauAttention,
    LuongAttention,
    make_attention,
)

KINDS = ["bahdanau", "luong"]
MASK = np.array([[True, True, True, False, False], [True, True, True, True, True]])


def inputs(seed=0, batch=2, query_time=3, key_time=5, query_dim=8, value_dim=6):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(batch, query_time, query_dim)).astype("float32")
    values = rng.normal(size=(batch, key_time, value_dim)).astype("float32")
    return query, values


def attention(kind, **kwargs):
    keras.utils.set_random_seed(0)
    return make_attention(kind, 16, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_sequence_and_single_step(kind):
    layer = attention(kind)
    query, values = inputs()
    context, weights = layer(query, values, MASK)
    assert tuple(context.shape) == (2, 3, 6)
    assert tuple(weights.shape) == (2, 3, 5)
    step_context, step_weights = layer(query[:, 1], values, MASK)
    assert tuple(step_context.shape) == (2, 6)
    assert tuple(step_weights.shape) == (2, 5)
    np.testing.assert_allclose(step_context, np.asarray(context)[:, 1], atol=1e-6)
    np.testing.assert_allclose(step_weights, np.asarray(weights)[:, 1], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_masked_keys_get_no_weight_and_weights_sum_to_one(kind):
    context, weights = attention(kind)(*inputs(), MASK)
    weights = np.asarray(weights)
    assert np.all(weights[0, :, 3:] == 0.0)
    assert np.all(weights[0, :, :3] > 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_masked_values_do_not_change_context(kind):
    layer = attention(kind)
    query, values = inputs()
    changed = values.copy()
    changed[0, 3:] = 100.0
    context, _ = layer(query, values, MASK)
    changed_context, _ = layer(query, changed, MASK)
    np.testing.assert_allclose(context, changed_context, atol=1e-6)
    # Without the mask the same change does move the context: the check above can fail.
    assert not np.allclose(layer(query, values)[0], layer(query, changed)[0], atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_precomputed_keys_give_the_same_result(kind):
    layer = attention(kind)
    query, values = inputs()
    context, weights = layer(query, values, MASK)
    keys = layer.project_keys(values)
    cached_context, cached_weights = layer(query[:, 2], values, MASK, keys=keys)
    np.testing.assert_allclose(cached_context, np.asarray(context)[:, 2], atol=1e-6)
    np.testing.assert_allclose(cached_weights, np.asarray(weights)[:, 2], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_fully_masked_row_gives_zero_weights(kind):
    mask = MASK.copy()
    mask[0] = False
    context, weights = attention(kind)(*inputs(), mask)
    assert np.all(np.asarray(weights)[0] == 0.0) and np.all(np.asarray(context)[0] == 0.0)
    assert np.isfinite(np.asarray(context)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_mask_is_taken_from_the_values_keras_mask(kind):
    layer = attention(kind)
    query, values = inputs()
    padded = values.copy()
    padded[0, 3:] = 0.0
    masked_values = keras.layers.Masking(0.0)(padded)
    _, weights = layer(query, masked_values)
    assert np.all(np.asarray(weights)[0, :, 3:] == 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_float16_masking_is_finite(kind):
    layer = attention(kind, dtype="mixed_float16")
    query, values = inputs()
    context, weights = layer(query, values, MASK)
    assert context.dtype == "float16"
    weights = np.asarray(weights, dtype="float32")
    assert np.isfinite(weights).all() and np.all(weights[0, :, 3:] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=2e-3)


def test_luong_scale_divides_scores():
    query, values = inputs()
    plain, scaled = LuongAttention(), LuongAttention(scale=True)
    plain(query, values)
    scaled(query, values)
    scaled.set_weights(plain.get_weights())
    keys = plain.project_keys(values)
    np.testing.assert_allclose(
        scaled._score(query, keys), np.asarray(plain._score(query, keys)) / np.sqrt(8), rtol=1e-5
    )


def test_make_attention_rejects_unknown_kind():
    with pytest.raises(ValueError, match="Unknown attention 'dot'"):
        make_attention("dot", 16)


def test_make_attention_builds_the_named_layer():
    assert isinstance(make_attention("bahdanau", 7), BahdanauAttention)
    assert make_attention("bahdanau", 7).units == 7
    assert isinstance(make_attention("luong", 7, scale=True), LuongAttention)


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip(kind):
    layer = attention(kind, **({"scale": True} if kind == "luong" else {}))
    query, values = inputs()
    expected, _ = layer(query, values, MASK)
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(query, values, MASK)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(query, values, MASK)[0], expected, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)


@pytest.mark.parametrize("kind", KINDS)
def test_model_save_and_load(kind, tmp_path):
    query_in = keras.Input((None, 8))
    values_in = keras.Input((None, 6))
    mask_in = keras.Input((None,), dtype="bool")
    context, weights = attention(kind)(query_in, values_in, mask_in)
    model = keras.Model([query_in, values_in, mask_in], [context, weights])
    query, values = inputs()
    expected = model.predict([query, values, MASK], verbose=0)
    path = tmp_path / "attention.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    for got, want in zip(restored.predict([query, values, MASK], verbose=0), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
