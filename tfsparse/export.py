"""`export`: SavedModel, `.keras` and TFLite files, checked on the LiteRT
interpreter, with a `report.json` of sizes, parity and latency.

Layout of the export directory:

```
directory/
  saved_model/        Keras `model.export(..., format="tf_saved_model")`
  model.keras         the Keras model itself
  model.tflite        TFLite flatbuffer (sparse-encoded when weights are sparse)
  model_dense.tflite  only when sparse encoding was used: the plain conversion
  report.json         the dict `export` returns
```

Everything is written into a temporary directory next to `directory` and
renamed at the end, so an interrupted export leaves nothing half-written.
An existing `directory` is replaced only if it is empty or holds a previous
export (a `report.json`).

TFLite checks run on `ai_edge_litert.interpreter.Interpreter` (the LiteRT
runtime; `tf.lite.Interpreter` is deprecated): outputs compared with the Keras
model on a sample, and the median batch-1 latency over repeated invocations
(the Keras model's, through a `tf.function`, is given for reference).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import keras
import numpy as np

from tfsparse import _graph
from tfsparse._versions import versions
from tfsparse.gates.base import gates_of
from tfsparse.layers import effective_kernel

QUANTIZE_CHOICES = (None, "dynamic", "int8")
SPARSE_CHOICES = ("auto", True, False)
# Fraction of exact zeros in the kernels above which "auto" asks the converter
# for sparse encoding.
SPARSE_THRESHOLD = 0.5
# Float32 parity bound, relative to the output scale: |TFLite − Keras| ≤
# TOLERANCE · max(1, max |Keras output|). XNNPACK sums in another order than
# TensorFlow's kernels, so logits of magnitude ~20 differ by a few ulps
# (~1e-5 absolute) even for a model that was never sparsified.
TOLERANCE = 1e-5
SAMPLE_SIZE = 64
REPRESENTATIVE_SIZE = 100
WARMUP_RUNS = 3


def export(
    model: keras.Model,
    directory: str | os.PathLike,
    tflite: bool = True,
    quantize: str | None = None,
    representative_data: np.ndarray | None = None,
    test_data: tuple[np.ndarray, np.ndarray] | None = None,
    sparse_weights: bool | str = "auto",
    latency_runs: int = 200,
) -> dict[str, Any]:
    """Writes `model` as SavedModel, `.keras` and TFLite, and checks the TFLite file.

    Args:
        model: a Keras model (usually the output of `tfsparse.compact`).
        directory: the export directory (created; its parent must be writable).
        tflite: also convert to TFLite and check it on LiteRT.
        quantize: `None` (float32), `"dynamic"` (dynamic-range quantization,
            `tf.lite.Optimize.DEFAULT`) or `"int8"` (full-integer ops and int8
            input/output; needs `representative_data`).
        representative_data: example inputs (an array, or an iterable of
            batches) for int8 calibration; also the parity sample when
            `test_data` is not given.
        test_data: `(x, y)` with integer labels (or one-hot), or just `x`:
            parity sample, and accuracy of the Keras and TFLite models.
        sparse_weights: `"auto"` asks the converter for sparse weight encoding
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`) when at least 50 % of the
            kernel weights are exactly zero; `True` always, `False` never. When
            it is used, the plain conversion is also kept and both sizes and
            latencies are reported.
        latency_runs: number of timed batch-1 invocations (median reported).

    Returns:
        The report dict, also written to `directory/report.json`: `files`
        (absolute paths), `sizes_bytes`, `zero_weight_fraction`,
        `contains_gates` (True for a model that was not compacted), and with
        `tflite=True`, `tflite` (`parity`: `max_abs_diff`, `output_scale`,
        `ok` (float32: max abs diff ≤ 1e-5 · output_scale, where output_scale
        = max(1, max |Keras output|)), `latency_ms`, `accuracy`), `keras` (`latency_ms`,
        `accuracy`) and `sparse_conversion` when sparse encoding was used.

    Raises:
        ValueError: an unknown `quantize` or `sparse_weights`, int8 without
            `representative_data`, a bad `latency_runs`, a model with several
            inputs or outputs (TFLite check).
        OSError: `directory` cannot be written.

    Examples:
        >>> report = tfsparse.export(small, "saved_models/run", test_data=(x, y))
        >>> report["tflite"]["parity"]["ok"], report["sizes_bytes"]["tflite"]
    """
    _check_arguments(model, tflite, quantize, representative_data, sparse_weights, latency_runs)
    target = os.path.abspath(os.fspath(directory))
    work = _make_work_dir(target)
    try:
        report = _write_all(
            model,
            work,
            target,
            tflite,
            quantize,
            representative_data,
            test_data,
            sparse_weights,
            latency_runs,
        )
        with open(os.path.join(work, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        _move_into_place(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report


# --------------------------------------------------------------- arguments
def _check_arguments(model, tflite, quantize, representative_data, sparse_weights, latency_runs):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(
            f"Unknown quantize={quantize!r}; accepted values: None (float32), 'dynamic', 'int8'."
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs `representative_data`: example inputs "
            "(an array or an iterable of batches) to calibrate int8 ranges."
        )
    if quantize is not None and not tflite:
        raise ValueError(
            f"quantize={quantize!r} applies to the TFLite file; it needs tflite=True."
        )
    if sparse_weights not in SPARSE_CHOICES:
        raise ValueError(
            f"Unknown sparse_weights={sparse_weights!r}; accepted values: 'auto', True, False."
        )
    if isinstance(latency_runs, bool) or not isinstance(latency_runs, int) or latency_runs < 1:
        raise ValueError(f"`latency_runs` must be an int ≥ 1; got {latency_runs!r}.")
    if tflite and (len(model.inputs) != 1 or len(model.outputs) != 1):
        raise ValueError(
            "The TFLite check supports models with one input and one output; "
            f"{model.name!r} has {len(model.inputs)} and "
            f"{len(model.outputs)}. Use tflite=False."
        )


# ------------------------------------------------------------ directories
def _make_work_dir(target):
    """A fresh temporary directory next to `target` (clear errors if not possible)."""
    parent = os.path.dirname(target)
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise OSError(f"Cannot export to {target!r}: it exists and is not a directory.")
        if os.listdir(target) and not os.path.exists(os.path.join(target, "report.json")):
            raise OSError(
                f"Cannot export to {target!r}: the directory is not empty and "
                "does not hold a previous export (no report.json). Choose "
                "another directory or empty it."
            )
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    except OSError as error:
        raise OSError(
            f"Cannot write the export directory {target!r}: {error.strerror or error}."
        ) from error


def _move_into_place(work, target):
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(
            prefix=f".{os.path.basename(target)}.old-", dir=os.path.dirname(target)
        )
        os.rmdir(old)
        os.rename(target, old)
    os.rename(work, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


# ------------------------------------------------------------------ export
def _write_all(
    model,
    work,
    target,
    tflite,
    quantize,
    representative_data,
    test_data,
    sparse_weights,
    latency_runs,
):
    model.export(os.path.join(work, "saved_model"), format="tf_saved_model", verbose=False)
    model.save(os.path.join(work, "model.keras"))
    zeros = zero_weight_fraction(model)
    report = {
        "model": model.name,
        "directory": target,
        "files": {"saved_model": "saved_model", "keras": "model.keras"},
        "zero_weight_fraction": zeros,
        # Gates still in the model: export works, but `tfsparse.compact` first
        # gives the smaller, faster model.
        "contains_gates": bool(gates_of(model)),
        "quantize": quantize,
        "tflite_checked": bool(tflite),
    }
    if tflite:
        use_sparse = sparse_weights is True or (
            sparse_weights == "auto" and zeros >= SPARSE_THRESHOLD
        )
        _add_tflite(
            report, model, work, quantize, representative_data, test_data, use_sparse, latency_runs
        )
    report["sizes_bytes"] = {
        key: _size(os.path.join(work, name)) for key, name in report["files"].items()
    }
    report["files"] = {key: os.path.join(target, name) for key, name in report["files"].items()}
    report["versions"] = versions()
    return report


def _add_tflite(
    report, model, work, quantize, representative_data, test_data, use_sparse, latency_runs
):
    saved_model = os.path.join(work, "saved_model")
    x, y = _sample(model, test_data, representative_data)
    path = os.path.join(work, "model.tflite")
    _write(path, convert(saved_model, quantize, representative_data, sparse=use_sparse))
    tolerance = TOLERANCE if quantize is None else None
    check = verify_tflite(path, model, x, latency_runs=latency_runs, tolerance=tolerance, y=y)
    report["files"]["tflite"] = "model.tflite"
    report["sparse_weights"] = use_sparse
    report["tflite"] = {key: check[key] for key in ("latency_ms", "accuracy", "runtime")}
    report["tflite"]["parity"] = {
        "max_abs_diff": check["max_abs_diff"],
        "output_scale": check["output_scale"],
        "ok": check["parity_ok"],
        "tolerance": tolerance,
        "examples": int(len(x)),
    }
    report["keras"] = {
        "latency_ms": check["keras_latency_ms"],
        "accuracy": check["keras_accuracy"],
    }
    if use_sparse:
        dense_path = os.path.join(work, "model_dense.tflite")
        _write(dense_path, convert(saved_model, quantize, representative_data, sparse=False))
        dense = verify_tflite(dense_path, model, x[:1], latency_runs=latency_runs, tolerance=None)
        report["files"]["tflite_dense"] = "model_dense.tflite"
        sizes = {"dense": _size(dense_path), "sparse": _size(path)}
        report["sparse_conversion"] = {
            "size_bytes": sizes,
            "latency_ms": {"dense": dense["latency_ms"], "sparse": check["latency_ms"]},
            "runtime": {"dense": dense["runtime"], "sparse": check["runtime"]},
            "smaller": sizes["sparse"] < sizes["dense"],
            "faster": check["latency_ms"] < dense["latency_ms"],
        }


def _write(path, content):
    with open(path, "wb") as f:
        f.write(content)


def convert(saved_model_dir, quantize=None, representative_data=None, sparse=False):
    """TFLite flatbuffer (bytes) of a SavedModel.

    Args:
        saved_model_dir: a SavedModel directory (e.g. from `model.export`).
        quantize: `None`, `"dynamic"` or `"int8"` (see `export`).
        representative_data: calibration inputs for `"int8"`.
        sparse: ask for sparse weight encoding
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    optimizations = []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "int8":
        converter.representative_dataset = _representative(representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _representative(data):
    def generate():
        for example in _examples(data, REPRESENTATIVE_SIZE):
            yield [example[None].astype("float32")]

    return generate


def _examples(data, limit):
    """Up to `limit` single examples from an array or an iterable of batches."""
    if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape"):
        data = data[0]  # (x, y)
    if hasattr(data, "shape"):
        return list(np.asarray(data)[:limit])
    found = []
    for batch in data:
        batch = batch[0] if isinstance(batch, (tuple, list)) else batch
        found.extend(np.asarray(batch))
        if len(found) >= limit:
            break
    return found[:limit]


def _sample(model, test_data, representative_data):
    """(x, y or None): the parity sample."""
    if test_data is not None:
        x, y = (
            test_data
            if isinstance(test_data, (tuple, list)) and len(test_data) == 2
            else (test_data, None)
        )
        return np.asarray(x, dtype="float32"), None if y is None else np.asarray(y)
    if representative_data is not None:
        return np.stack(_examples(representative_data, SAMPLE_SIZE)).astype("float32"), None
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"The model input shape {shape} is not fully known: pass "
            "`test_data` or `representative_data` for the TFLite check."
        )
    rng = np.random.default_rng(0)
    return rng.normal(size=(SAMPLE_SIZE,) + shape).astype("float32"), None


def zero_weight_fraction(model):
    """Fraction of exact zeros over all kernels (gated kernels × their mask)."""
    zeros = total = 0
    for layer in _graph.all_layers(model):
        if not isinstance(getattr(layer, "kernel", None), keras.Variable):
            continue
        kernel = effective_kernel(layer)
        zeros += int(np.count_nonzero(kernel == 0))
        total += kernel.size
    return float(zeros) / total if total else 0.0


# ------------------------------------------------------------- verification
def verify_tflite(
    tflite_path: str | os.PathLike,
    keras_model: keras.Model,
    x: np.ndarray,
    latency_runs: int = 200,
    tolerance: float = TOLERANCE,
    y: np.ndarray | None = None,
) -> dict[str, Any]:
    """Runs a `.tflite` file on LiteRT and compares it with `keras_model`.

    Args:
        tflite_path: path of the `.tflite` file (one input, one output).
        keras_model: the Keras model it was converted from.
        x: sample inputs (a batch).
        latency_runs: timed batch-1 invocations (median reported).
        tolerance: max abs difference accepted for `parity_ok`, per unit of
            output scale (max(1, max |Keras output|)); `None` skips the
            verdict (quantized models).
        y: optional labels of `x` (integers or one-hot) for the accuracies.

    Returns:
        A dict: `max_abs_diff` (TFLite vs Keras outputs, dequantized),
        `output_scale`, `parity_ok` (bool, or None without tolerance), `latency_ms` and
        `keras_latency_ms` (median batch-1), `accuracy` and `keras_accuracy`
        (None without `y`), `runtime` (whether LiteRT's default XNNPACK
        delegate ran the model or, when it cannot, LiteRT's builtin kernels).
    """
    x = np.asarray(x, dtype="float32")
    interpreter, runtime, tflite_out = _interpreter_and_outputs(tflite_path, x)
    keras_out = np.asarray(keras_model.predict(x, verbose=0, batch_size=256))
    diff = float(np.max(np.abs(tflite_out - keras_out))) if x.size else 0.0
    scale = max(1.0, float(np.max(np.abs(keras_out)))) if x.size else 1.0
    return {
        "max_abs_diff": diff,
        "output_scale": scale,
        "parity_ok": None if tolerance is None else bool(diff <= tolerance * scale),
        "latency_ms": _tflite_latency(interpreter, x[:1], latency_runs),
        "keras_latency_ms": _keras_latency(keras_model, x[:1], latency_runs),
        "accuracy": _accuracy(tflite_out, y),
        "keras_accuracy": _accuracy(keras_out, y),
        "runtime": runtime,
    }


def _interpreter_and_outputs(tflite_path, x):
    """LiteRT interpreter with its default delegate (XNNPACK), or without any
    delegate when XNNPACK cannot prepare the model (sparse quantized kernels)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interpreter = Interpreter(model_path=os.fspath(tflite_path))
        return interpreter, "litert (default delegates)", _run(interpreter, x)
    except RuntimeError as error:
        if "delegate" not in str(error).lower():
            raise
    interpreter = Interpreter(
        model_path=os.fspath(tflite_path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return interpreter, "litert (builtin kernels; XNNPACK could not run it)", _run(interpreter, x)


def _run(interpreter, x):
    """Outputs of the interpreter on batch `x` (float, dequantized)."""
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], _quantize(x, inp))
    interpreter.invoke()
    return _dequantize(interpreter.get_tensor(out["index"]), out)


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.floating) or scale == 0:
        return x.astype(detail["dtype"])  # float, or integer ids (an Embedding's input)
    info = np.iinfo(detail["dtype"])
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def _dequantize(values, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.floating) or scale == 0:
        return values.astype("float32")
    return ((values.astype("float32") - zero_point) * scale).astype("float32")


def _tflite_latency(interpreter, x1, runs):
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], list(x1.shape))
    interpreter.allocate_tensors()
    value = _quantize(x1, inp)

    def once():
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()

    return _median_ms(once, runs)


def _keras_latency(model, x1, runs):
    import tensorflow as tf

    call = tf.function(lambda t: model(t, training=False))
    x1 = tf.constant(x1)
    return _median_ms(lambda: call(x1).numpy(), runs)


def _median_ms(fn, runs):
    for _ in range(WARMUP_RUNS):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _accuracy(outputs, y):
    if y is None:
        return None
    labels = np.argmax(y, axis=-1) if np.ndim(y) == np.ndim(outputs) else np.ravel(y)
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))
