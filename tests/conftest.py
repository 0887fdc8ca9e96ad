import os

# Quiet TensorFlow's C++ logging; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same Python / NumPy / backend seeds."""
    keras.utils.set_random_seed(0)
    yield
