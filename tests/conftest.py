import os

# Quiet TensorFlow's C++ logging; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One inter-op thread, so that independent ops of a step run one after the
# other. With TF's default on CPU, NPN's two-pass ARM step comes out different
# in the last bits about once in a thousand steps (the other gate families
# repeat bit for bit), the binary gates amplify it, and the exact-resume tests
# failed about one run in five (tests/test_resume.py, before and after the
# 2026-12-01 changes). With one thread, 0 of 20 reruns differed.
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same Python / NumPy / backend seeds."""
    keras.utils.set_random_seed(0)
    yield
