"""Every gate family trains under tf.distribute.MirroredStrategy over two
logical CPU devices; deterministic configurations give the same losses and
weights as one device (so penalties are scaled correctly per replica). Two
worker processes under MultiWorkerMirroredStrategy end on identical weights."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "helpers", "distributed_check.py")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def results():
    run = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, run.stderr[-2000:]
    return {r["case"]: r for r in lines}


def test_every_family_trains_under_mirrored_strategy(results):
    assert len(results) == 9
    for name, result in results.items():
        assert result["ok"], (name, result.get("error"))


def test_deterministic_cases_match_one_device(results):
    assert any(result["deterministic"] for result in results.values())
    for name, result in results.items():
        if result["deterministic"]:
            assert result["max_loss_diff"] <= TOLERANCE, name
            assert result["max_weight_diff"] <= TOLERANCE, name


MULTI_WORKER_SCRIPT = os.path.join(os.path.dirname(__file__), "helpers", "multi_worker_check.py")
MULTI_WORKER_METHODS = ("npn", "dbb", "targeted_dropout")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_on_identical_weights(tmp_path):
    """MultiWorkerMirroredStrategy, 2 processes on localhost (TF_CONFIG): one
    epoch of a sparsified LeNet-5 of three gate families (see the helper); every
    weight, gate state included, must be bit-identical on both workers, and
    training must have changed them."""
    ports = ",".join(map(str, _free_ports(2)))
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = []
    try:
        for i, log in enumerate(logs):
            # Output goes to files: a full pipe would block a worker, and its
            # peer with it, inside a collective.
            with open(log, "w") as out:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, MULTI_WORKER_SCRIPT, str(i), ports, str(tmp_path)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        for worker in workers:
            worker.wait(timeout=600)
    finally:
        for worker in workers:  # one worker failing leaves its peer waiting
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log.read_text()[-3000:]
    for method in MULTI_WORKER_METHODS:
        first, second = (np.load(tmp_path / f"worker-{i}-{method}.npz") for i in range(2))
        assert first.files == second.files
        assert np.isfinite(first["loss"]), method
        assert first["changed"] > 0, method
        for name in first.files:
            np.testing.assert_array_equal(first[name], second[name], err_msg=method)
