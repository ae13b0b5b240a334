"""The export path: raw input in, answer out, reloaded in a fresh CPU-only process."""

import numpy as np
import pytest
import tensorflow as tf
from toy import LABELS, ToyConfig, ToyTask

from shared import config as config_lib
from shared.errors import RnnsuiteError
from shared.export import load_endpoint, serve, serve_in_fresh_process
from shared.training import restore_model, train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(ToyTask(), config_lib.resolve(ToyConfig, overrides=["train.epochs=3"]), run_dir)
    return run_dir


@pytest.mark.slow
def test_export_reloads_in_a_fresh_process_and_agrees_with_keras(trained_run, tmp_path):
    config, model = restore_model(ToyTask(), trained_run)
    path = ToyTask().export(model, config, trained_run, tmp_path / "export")
    inputs = np.array([b"1234", b"3", b"41221", b"2222222"])
    outputs = serve_in_fresh_process(path, {"tokens": inputs})

    tokens = tf.ragged.constant([[int(c) for c in s.decode()] for s in inputs]).to_tensor()
    expected = tf.nn.softmax(model(tokens)).numpy()
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    assert [label.decode() for label in outputs["label"]] == [
        LABELS[i] for i in expected.argmax(-1)
    ]
    # The model learned: the label is the first token.
    assert [label.decode() for label in outputs["label"]] == ["one", "three", "four", "two"]


def test_versioned_layout_and_in_process_serving(trained_run, tmp_path):
    config, model = restore_model(ToyTask(), trained_run)
    from shared.export import export_endpoint

    def endpoint(tokens):
        return {"length": tf.strings.length(tokens)}

    path = export_endpoint(
        tmp_path / "serving", endpoint, [tf.TensorSpec([None], tf.string, name="tokens")], version=3
    )
    assert path == tmp_path / "serving" / "3" and (path / "saved_model.pb").is_file()
    assert serve(tmp_path / "serving", {"tokens": np.array([b"ab", b"abc"])})[
        "length"
    ].tolist() == [2, 3]


def test_loading_a_folder_without_an_export_fails_clearly(tmp_path):
    with pytest.raises(RnnsuiteError, match="no SavedModel"):
        load_endpoint(tmp_path)
