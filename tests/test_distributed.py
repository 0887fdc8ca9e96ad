"""Every gate family trains under tf.distribute.MirroredStrategy over two
logical CPU devices; deterministic configurations give the same losses and
weights as one device (so penalties are scaled correctly per replica)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "helpers", "distributed_check.py")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def results():
    run = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True,
                         timeout=600)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, run.stderr[-2000:]
    return {r["case"]: r for r in lines}


def test_every_family_trains_under_mirrored_strategy(results):
    assert len(results) == 8
    for name, result in results.items():
        assert result["ok"], (name, result.get("error"))


def test_deterministic_cases_match_one_device(results):
    for name, result in results.items():
        if result["deterministic"]:
            assert result["max_loss_diff"] <= TOLERANCE, name
            assert result["max_weight_diff"] <= TOLERANCE, name
