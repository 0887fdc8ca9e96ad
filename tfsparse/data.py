"""Datasets for the reference experiments, as plain NumPy arrays.

`load()` is the one entry point. It returns train / validation / test splits of
images in NHWC layout with integer class ids, from one of three sources:

- a tensorflow-datasets name (`mnist`, `fashion_mnist`, `cifar10`, `cifar100`),
  which needs a network the first time;
- `digits`, the 8x8 scikit-learn digits set, which ships with scikit-learn and
  so works offline (tests and the demo use it);
- a path to an `.npz` file in the layout of Keras' `mnist.npz`
  (`x_train, y_train, x_test, y_test`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100")
OFFLINE_NAMES = ("digits",)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

_OFFLINE_HINT = (
    "Offline alternatives: dataset 'digits' (ships with scikit-learn) or a path "
    "to an .npz file with arrays x_train, y_train, x_test, y_test "
    "(the layout of Keras' mnist.npz)."
)


class DatasetUnavailableError(RuntimeError):
    """A tensorflow-datasets dataset could not be downloaded or prepared."""


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """Train / validation / test arrays of one dataset.

    Each split is a tuple `(x, y)`: `x` is float32 with shape `(N, H, W, C)`
    (in [0, 1] when loaded with `normalize=True`), `y` is int64 class ids of
    shape `(N,)`. The validation split may be empty (`N == 0`).

    Attributes:
        train: `(x, y)` training arrays.
        val: `(x, y)` validation arrays, carved from the end of a seeded
            permutation of the training set.
        test: `(x, y)` test arrays.
        num_classes: number of classes (labels are `0 .. num_classes - 1`).
        input_shape: shape of one example, `(H, W, C)`.
        name: the dataset name, or the file stem for an `.npz` file.
    """

    train: tuple
    val: tuple
    test: tuple
    num_classes: int
    input_shape: tuple
    name: str

    def __repr__(self):
        sizes = ", ".join(f"{k}={len(getattr(self, k)[1])}" for k in ("train", "val", "test"))
        return (
            f"Splits(name={self.name!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, {sizes})"
        )


def load(
    name_or_path: str | os.PathLike,
    validation_split: float = 0.1,
    normalize: bool = True,
    seed: int = 0,
    data_dir: str | None = None,
) -> Splits:
    """Loads a dataset as NumPy train / validation / test splits.

    Args:
        name_or_path: one of `"mnist"`, `"fashion_mnist"`, `"cifar10"`,
            `"cifar100"` (tensorflow-datasets, needs a network the first time),
            `"digits"` (scikit-learn, offline; pixels 0..16 are scaled by
            1/16), or a path to an `.npz` file
            with arrays `x_train, y_train, x_test, y_test`. Images in the file
            are `(N, H, W)` or `(N, H, W, C)`; uint8 images are scaled by
            1/255, float images must already be in [0, 1].
        validation_split: fraction of the training set, in [0, 1), held out
            as the validation split. The held-out examples are the last ones
            of a permutation drawn with `seed`, so the split is reproducible.
        normalize: if True, scale pixels to [0, 1]; if False, return the raw
            values cast to float32.
        seed: seed of the validation permutation (and of the digits
            train/test split).
        data_dir: tensorflow-datasets cache directory (default: its own).

    Returns:
        A `Splits`.

    Raises:
        ValueError: unknown dataset name, bad `validation_split`, or an `.npz`
            file with missing arrays, wrong shapes or invalid labels.
        FileNotFoundError: the `.npz` path does not exist.
        DatasetUnavailableError: (a `RuntimeError`) tensorflow-datasets could
            not download or prepare the dataset.

    Examples:
        >>> splits = load("digits", validation_split=0.1)
        >>> x, y = splits.train
        >>> x.shape[1:], splits.num_classes
    ((8, 8, 1), 10)
    """
    _check_validation_split(validation_split)
    name_or_path = os.fspath(name_or_path)
    # scikit-learn's digits have pixels 0..16; any file, whatever its name, is scaled by its range.
    from_digits = name_or_path in OFFLINE_NAMES
    if name_or_path in TFDS_NAMES:
        name = name_or_path
        (x_train, y_train), (x_test, y_test) = _load_tfds(name, data_dir)
    elif name_or_path in OFFLINE_NAMES:
        name = name_or_path
        (x_train, y_train), (x_test, y_test) = _load_digits(seed)
    elif name_or_path.endswith(".npz"):
        name = os.path.splitext(os.path.basename(name_or_path))[0]
        (x_train, y_train), (x_test, y_test) = _load_npz(name_or_path)
    else:
        raise ValueError(
            f"Unknown dataset {name_or_path!r}. Accepted names: "
            f"{', '.join(TFDS_NAMES + OFFLINE_NAMES)}, or a path to an .npz file."
        )

    if from_digits:
        scale = 1.0 / 16.0 if normalize else 1.0
        x_train = x_train.astype(np.float32) * scale
        x_test = x_test.astype(np.float32) * scale
    else:
        x_train = _to_float(x_train, normalize, "x_train")
        x_test = _to_float(x_test, normalize, "x_test")
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1

    train, val = _split_validation(x_train, y_train, validation_split, seed)
    return Splits(
        train=train,
        val=val,
        test=(x_test, y_test),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        name=name,
    )


def steps_per_epoch(num_examples, batch_size):
    """Batches in one epoch over `num_examples` (the last may be partial)."""
    return -(-num_examples // batch_size)


def as_dataset(x, y, batch_size=128, shuffle=False, seed=0):
    """Wraps arrays in a batched, prefetched `tf.data.Dataset`.

    Args:
        x: images.
        y: labels.
        batch_size: examples per batch.
        shuffle: reshuffle the whole split every epoch.
        seed: shuffle seed.

    Returns:
        A `tf.data.Dataset` of `(x, y)` batches.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# --- sources ----------------------------------------------------------------


def _load_tfds(name, data_dir):
    # Imported lazily: tensorflow_datasets is slow to import and only this
    # source needs it.
    import tensorflow_datasets as tfds

    try:
        splits = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=data_dir)
    except (OSError, tfds.download.DownloadError) as e:  # No network, disk or checksum.
        raise DatasetUnavailableError(
            f"Could not download or prepare the tensorflow-datasets dataset "
            f"{name!r} ({type(e).__name__}: {e}). {_OFFLINE_HINT}"
        ) from e
    return tuple(_as_arrays(tfds, split) for split in splits)


def _as_arrays(tfds, split):
    # In batches rather than `batch_size=-1`, which needs the split's size
    # up front (tfds.testing.mock_data's generated splits have none).
    images, labels = [], []
    for x, y in tfds.as_numpy(split.batch(8192)):
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _load_digits(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.uint8)[..., None]  # 0..16, scaled by load().
    y = digits.target.astype(np.int64)
    # Stratified 80/20 so every class is present in both splits.
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=seed
    )
    return (x_train, y_train), (x_test, y_test)


def _load_npz(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Dataset file not found: {path!r}")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in NPZ_KEYS if k not in f.files]
        if missing:
            raise ValueError(
                f"{path!r} is missing arrays {missing}; expected "
                f"{list(NPZ_KEYS)} (the layout of Keras' mnist.npz), "
                f"found {sorted(f.files)}."
            )
        arrays = {k: f[k] for k in NPZ_KEYS}

    for part in ("train", "test"):
        x = arrays[f"x_{part}"]
        if x.ndim == 3:  # (N, H, W): grayscale without a channel axis.
            x = x[..., None]
        elif x.ndim != 4:
            raise ValueError(
                f"x_{part} in {path!r} has shape {x.shape}; expected (N, H, W) or (N, H, W, C)."
            )
        arrays[f"x_{part}"] = x
        arrays[f"y_{part}"] = _check_labels(arrays[f"y_{part}"], len(x), f"y_{part}", path)

    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            f"x_train and x_test in {path!r} have different image shapes: "
            f"{arrays['x_train'].shape[1:]} vs {arrays['x_test'].shape[1:]}."
        )
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


# --- checks and conversions -------------------------------------------------


def _check_validation_split(validation_split):
    if isinstance(validation_split, bool) or not isinstance(
        validation_split, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"validation_split must be a number in [0, 1); got {validation_split!r}.")
    if not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split}.")


def _check_labels(y, n, key, path):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1) column vectors are common.
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{key} in {path!r} has shape {y.shape}; expected (N,).")
    if len(y) != n:
        raise ValueError(f"{key} in {path!r} has {len(y)} labels but there are {n} images.")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)  # Integer-valued floats are accepted as class ids.
    if y.dtype.kind not in "iu":
        raise ValueError(f"{key} in {path!r} must hold integer class ids; got dtype {y.dtype}.")
    if y.size and y.min() < 0:
        raise ValueError(f"{key} in {path!r} has negative labels (min {y.min()}).")
    return y.astype(np.int64)


def _to_float(x, normalize, key):
    if not normalize:
        return x.astype(np.float32)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype.kind in "iu":
        # Other integer types are read as 8-bit pixel values too, if they fit.
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(
                f"{key}: integer images must be in [0, 255]; got range [{x.min()}, {x.max()}]."
            )
        return x.astype(np.float32) / 255.0
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
        # Float images are taken as already scaled; anything else is a mistake
        # (e.g. 0..255 floats) that would silently change training.
        if x.size and (not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0):
            raise ValueError(
                f"{key}: float images must already be in [0, 1]; got range "
                f"[{np.nanmin(x)}, {np.nanmax(x)}]. Store uint8 pixels, rescale "
                f"the file, or load with normalize=False."
            )
        return x
    raise ValueError(f"{key}: unsupported image dtype {x.dtype}.")


def _split_validation(x, y, validation_split, seed):
    n = len(x)
    n_val = int(round(n * validation_split))
    perm = np.random.default_rng(seed).permutation(n)
    # Sorted indices keep the original order inside each split (fit shuffles anyway).
    train_idx = np.sort(perm[: n - n_val])
    val_idx = np.sort(perm[n - n_val :])
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
