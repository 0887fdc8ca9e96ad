import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfsparse import data


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _mnist_like(n_train=50, n_test=20, shape=(6, 6), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape)).astype(dtype),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, *shape)).astype(dtype),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }


# --- digits -----------------------------------------------------------------


def test_digits_shapes_dtypes_ranges():
    s = data.load("digits", validation_split=0.1)
    assert s.name == "digits"
    assert s.input_shape == (8, 8, 1)
    assert s.num_classes == 10
    for x, y in (s.train, s.val, s.test):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == (8, 8, 1) and x.shape[0] == y.shape[0]
        assert x.min() >= 0.0 and x.max() <= 1.0
    total = sum(len(y) for _, y in (s.train, s.val, s.test))
    assert total == 1797
    assert len(s.test[1]) == 360  # Stratified 80 / 20.
    assert len(s.val[1]) == round(0.1 * (1797 - 360))
    assert set(np.unique(s.test[1])) == set(range(10))


def test_digits_is_deterministic_and_seeded():
    a, b = data.load("digits", seed=0), data.load("digits", seed=0)
    np.testing.assert_array_equal(a.val[0], b.val[0])
    c = data.load("digits", seed=1)
    assert not np.array_equal(a.val[0], c.val[0])


def test_digits_raw_values_without_normalize():
    s = data.load("digits", normalize=False)
    assert s.train[0].dtype == np.float32
    assert s.train[0].max() == 16.0


def test_validation_split_zero_gives_empty_val():
    s = data.load("digits", validation_split=0)
    assert len(s.val[0]) == 0 and s.val[0].shape[1:] == (8, 8, 1)
    assert len(s.train[0]) == 1797 - 360


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.1", None])
def test_bad_validation_split(bad):
    with pytest.raises(ValueError, match="validation_split"):
        data.load("digits", validation_split=bad)


def test_unknown_name_lists_accepted_names():
    with pytest.raises(ValueError, match="mnist.*digits"):
        data.load("imagenet")


# --- .npz files -------------------------------------------------------------


def test_npz_uint8(tmp_path):
    arrays = _mnist_like()
    path = _write_npz(tmp_path / "tiny.npz", **arrays)
    s = data.load(path, validation_split=0.2, seed=3)
    assert s.name == "tiny"
    assert s.input_shape == (6, 6, 1)
    assert len(s.train[0]) == 40 and len(s.val[0]) == 10 and len(s.test[0]) == 20
    assert s.train[1].dtype == np.int64
    np.testing.assert_allclose(s.test[0][..., 0], arrays["x_test"] / 255.0, rtol=1e-6)
    # Validation is the tail of a seeded permutation of the training set.
    perm = np.random.default_rng(3).permutation(50)
    val_idx = np.sort(perm[40:])
    np.testing.assert_array_equal(s.val[1], arrays["y_train"][val_idx])


def test_an_npz_file_named_digits_is_scaled_by_its_own_range(tmp_path):
    arrays = _mnist_like()
    s = data.load(_write_npz(tmp_path / "digits.npz", **arrays))
    np.testing.assert_allclose(s.test[0][..., 0], arrays["x_test"] / 255.0, rtol=1e-6)


def test_npz_4d_float(tmp_path):
    arrays = _mnist_like(shape=(5, 5, 3))
    arrays["x_train"] = arrays["x_train"].astype(np.float32) / 255.0
    arrays["x_test"] = arrays["x_test"].astype(np.float32) / 255.0
    s = data.load(_write_npz(tmp_path / "rgb.npz", **arrays))
    assert s.input_shape == (5, 5, 3)
    np.testing.assert_array_equal(s.test[0], arrays["x_test"])


def test_npz_missing_file(tmp_path):
    path = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        data.load(path)


def test_npz_missing_keys(tmp_path):
    arrays = _mnist_like()
    del arrays["y_test"]
    path = _write_npz(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing.*y_test.*expected.*x_train"):
        data.load(path)


def test_npz_wrong_ndim(tmp_path):
    arrays = _mnist_like()
    arrays["x_train"] = arrays["x_train"].reshape(50, -1)
    path = _write_npz(tmp_path / "flat.npz", **arrays)
    with pytest.raises(ValueError, match=r"x_train.*\(50, 36\)"):
        data.load(path)


def test_npz_label_count_mismatch(tmp_path):
    arrays = _mnist_like()
    arrays["y_train"] = arrays["y_train"][:-1]
    path = _write_npz(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match="49 labels.*50 images"):
        data.load(path)


def test_npz_non_integer_labels(tmp_path):
    arrays = _mnist_like()
    arrays["y_test"] = arrays["y_test"] + 0.5
    path = _write_npz(tmp_path / "fractional.npz", **arrays)
    with pytest.raises(ValueError, match="integer class ids"):
        data.load(path)


def test_npz_float_out_of_range(tmp_path):
    arrays = _mnist_like()
    arrays["x_train"] = arrays["x_train"].astype(np.float32)  # 0..255 floats.
    path = _write_npz(tmp_path / "unscaled.npz", **arrays)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.load(path)
    # Without normalization the raw values are accepted as they are.
    s = data.load(path, normalize=False)
    assert s.train[0].max() > 1.0


# --- tensorflow-datasets ----------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_tfds_loader_reads_the_real_features_offline(name):
    """The real tensorflow-datasets path, on examples that
    `tfds.testing.mock_data` generates from the dataset's own features."""
    with tfds.testing.mock_data(num_examples=30):
        splits = data.load(name, validation_split=0.2)
    x, y = splits.train
    shape = (32, 32, 3) if name == "cifar10" else (28, 28, 1)
    assert x.shape == (24,) + shape and splits.val[0].shape == (6,) + shape
    assert splits.test[0].shape[1:] == shape
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int64 and splits.num_classes == 10


def test_tfds_failure_has_clear_message(monkeypatch):

    def offline(*args, **kwargs):
        raise ConnectionError("no network")  # What requests raises offline: an OSError.

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(RuntimeError, match="mnist") as info:
        data.load("mnist")
    assert isinstance(info.value, data.DatasetUnavailableError)
    message = str(info.value)
    assert "digits" in message and ".npz" in message and "no network" in message
