"""`tfsparse.export`: SavedModel, .keras and TFLite files with the same outputs."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from sklearn.datasets import load_digits

from tfsparse.compact import compact
from tfsparse.export import export, verify_tflite
from tfsparse.gates import HardConcreteGate

TOLERANCE = 1e-5


def _digits(n=64):
    digits = load_digits()
    return (digits.images[:n] / 16.0).astype("float32")[..., None], digits.target[:n]


def _gated_mlp():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = HardConcreteGate(name="flatten_gate")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    x = HardConcreteGate(name="fc1_gate")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    rng = np.random.default_rng(0)
    for name in ("flatten_gate", "fc1_gate"):
        gate = model.get_layer(name)
        gate.log_alpha.assign(rng.choice([-4.6, 0.5, 4.6], size=gate.mask_shape))
    return model


def _tflite_outputs(path, x):
    interpreter = Interpreter(model_path=str(path))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def test_compacted_model_round_trips_through_keras_savedmodel_and_tflite(tmp_path):
    gated = _gated_mlp()
    x, y = _digits()
    expected = gated.predict(x, verbose=0)
    small = compact(gated)
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    report = export(reloaded, tmp_path / "run", test_data=(x, y), latency_runs=5)

    run = tmp_path / "run"
    assert sorted(os.listdir(run)) == ["model.keras", "model.tflite", "report.json", "saved_model"]
    assert sorted(os.listdir(tmp_path)) == ["run", "small.keras"]  # no temporary left
    assert json.loads((run / "report.json").read_text()) == json.loads(json.dumps(report))
    parity = report["tflite"]["parity"]
    assert parity["ok"] is True and parity["max_abs_diff"] <= TOLERANCE
    assert report["sparse_weights"] is False and "sparse_conversion" not in report
    assert all(report["sizes_bytes"][k] > 0 for k in ("saved_model", "keras", "tflite"))
    assert report["tflite"]["latency_ms"] > 0 and report["keras"]["latency_ms"] > 0
    assert report["tflite"]["accuracy"] == report["keras"]["accuracy"]

    tflite_out = _tflite_outputs(report["files"]["tflite"], x)
    assert np.max(np.abs(tflite_out - expected)) <= TOLERANCE
    loaded = tf.saved_model.load(report["files"]["saved_model"])
    served = loaded.serve(tf.constant(x))
    assert np.max(np.abs(served.numpy() - expected)) <= TOLERANCE
    again = keras.models.load_model(report["files"]["keras"])
    assert np.max(np.abs(again.predict(x, verbose=0) - expected)) <= TOLERANCE


def _sparse_model():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    fc1 = model.get_layer("fc1")
    kernel = fc1.kernel.numpy()
    kernel[np.random.default_rng(0).random(kernel.shape) < 0.9] = 0
    fc1.kernel.assign(kernel)
    return model


def test_sparse_weights_get_sparse_encoding_and_both_files_are_reported(tmp_path):
    x, _ = _digits(16)
    report = export(_sparse_model(), tmp_path / "run", representative_data=x, latency_runs=3)
    assert report["zero_weight_fraction"] >= 0.5
    assert report["sparse_weights"] is True
    conversion = report["sparse_conversion"]
    assert set(conversion["size_bytes"]) == {"dense", "sparse"}
    assert conversion["size_bytes"]["sparse"] == report["sizes_bytes"]["tflite"]
    assert conversion["size_bytes"]["dense"] == report["sizes_bytes"]["tflite_dense"]
    assert isinstance(conversion["smaller"], bool) and isinstance(conversion["faster"], bool)
    assert report["tflite"]["parity"]["ok"] is True

    plain = export(
        _sparse_model(), tmp_path / "plain", sparse_weights=False, tflite=True, latency_runs=2
    )
    assert plain["sparse_weights"] is False and "tflite_dense" not in plain["files"]


def test_int8_reports_accuracy_on_test_data(tmp_path):
    x, y = _digits(64)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="logits")]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=30, verbose=0)
    report = export(
        model,
        tmp_path / "int8",
        quantize="int8",
        representative_data=x,
        test_data=(x, y),
        latency_runs=2,
    )
    assert report["quantize"] == "int8"
    assert report["tflite"]["parity"]["ok"] is None  # not asserted when quantized
    assert abs(report["tflite"]["accuracy"] - report["keras"]["accuracy"]) <= 0.1


def test_dynamic_quantization_shrinks_the_file(tmp_path):
    model = _sparse_model()
    common = dict(sparse_weights=False, latency_runs=2)
    plain = export(model, tmp_path / "float", **common)
    dynamic = export(model, tmp_path / "dynamic", quantize="dynamic", **common)
    assert dynamic["quantize"] == "dynamic" and dynamic["tflite"]["parity"]["ok"] is None
    assert dynamic["tflite"]["parity"]["max_abs_diff"] < 0.05
    assert dynamic["sizes_bytes"]["tflite"] < plain["sizes_bytes"]["tflite"] / 2


def test_bad_arguments_and_directories_are_refused(tmp_path):
    model = _sparse_model()
    with pytest.raises(ValueError, match="'dynamic', 'int8'"):
        export(model, tmp_path / "a", quantize="float16")
    with pytest.raises(ValueError, match="representative_data"):
        export(model, tmp_path / "a", quantize="int8")
    with pytest.raises(ValueError, match="sparse_weights"):
        export(model, tmp_path / "a", sparse_weights="yes")
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="Cannot write the export directory"):
        export(model, blocker / "run", tflite=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OSError, match="not empty"):
        export(model, foreign, tflite=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "foreign"]


def test_a_previous_export_is_replaced(tmp_path):
    model = _sparse_model()
    export(model, tmp_path / "run", tflite=False)
    report = export(model, tmp_path / "run", tflite=False)
    assert report["tflite_checked"] is False
    assert sorted(os.listdir(tmp_path)) == ["run"]
    assert sorted(os.listdir(tmp_path / "run")) == ["model.keras", "report.json", "saved_model"]


def test_verify_tflite_reports_parity_and_latency(tmp_path):
    model = _gated_mlp()
    report = export(compact(model), tmp_path / "run", latency_runs=2, sparse_weights=False)
    x, _ = _digits(8)
    check = verify_tflite(report["files"]["tflite"], model, x, latency_runs=3)
    assert check["parity_ok"] is True and check["max_abs_diff"] <= TOLERANCE
    assert check["latency_ms"] > 0 and check["keras_latency_ms"] > 0


@pytest.mark.parametrize("offset, ok", [(0.005, True), (0.02, False)])
def test_float_parity_bound_scales_with_the_outputs(tmp_path, offset, ok):
    """The float32 verdict is |TFLite − Keras| ≤ 1e-5 · max(1, max |output|):
    with outputs near 1,000 an offset of 0.005 passes and 0.02 fails."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="out")])
    model.get_layer("out").bias.assign(np.full(3, 1000.0, dtype="float32"))
    report = export(model, tmp_path / "run", latency_runs=2, sparse_weights=False)
    shifted = keras.models.clone_model(model)
    shifted.set_weights(model.get_weights())
    shifted.get_layer("out").bias.assign(np.full(3, 1000.0 + offset, dtype="float32"))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    check = verify_tflite(report["files"]["tflite"], shifted, x, latency_runs=2)
    assert check["output_scale"] == pytest.approx(1000.0, rel=0.01)
    assert check["max_abs_diff"] == pytest.approx(offset, abs=2e-4)  # float32 ulp at 1e3: 6e-5
    assert check["parity_ok"] is ok
