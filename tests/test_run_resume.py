"""`RunConfig(resume=True)`: a run stopped in any phase continues where it stopped
when started again, without training its finished phases again."""

import json
import os

import keras
import numpy as np
import pytest

from tests.helpers.interrupt import Interrupt
from tfsparse import resume, training


class CountEpochs(keras.callbacks.Callback):
    def __init__(self, counts, phase):
        super().__init__()
        self.counts, self.phase = counts, phase

    def on_epoch_end(self, epoch, logs=None):
        self.counts[self.phase] = self.counts.get(self.phase, 0) + 1


BACKUP = resume.PhaseCheckpoints.callbacks


def _config(tmp_path, **changes):
    # BB after dense pretraining, then DBB: all three phases.
    settings = dict(
        model="lenet_300_100",
        dataset="digits",
        method="bb",
        epochs=3,
        pretrain_epochs=1,
        continue_epochs=2,
        out=str(tmp_path),
        run_name="stopped",
        verbose=0,
        resume=True,
    )
    return training.RunConfig(**{**settings, **changes})


def _run(config, monkeypatch, interrupt=None):
    """Runs `config`, stopping at (phase, epoch) `interrupt`; returns the
    results (None when stopped) and the epochs each phase trained."""
    counts = {}

    def callbacks(self, phase):
        extra = [CountEpochs(counts, phase)]
        if interrupt and interrupt[0] == phase:
            extra.append(Interrupt(interrupt[1]))
        return BACKUP(self, phase) + extra

    monkeypatch.setattr(resume.PhaseCheckpoints, "callbacks", callbacks)
    if interrupt:
        with pytest.raises(KeyboardInterrupt):
            training.run(config)
        return None, counts
    return training.run(config), counts


@pytest.mark.parametrize("phase, epoch", [("train", 2), ("continue", 1)])
def test_a_stopped_run_continues_where_it_stopped(tmp_path, monkeypatch, phase, epoch):
    reference, _ = _run(_config(tmp_path, run_name="whole"), monkeypatch)
    _, before = _run(_config(tmp_path), monkeypatch, interrupt=(phase, epoch))
    results, after = _run(_config(tmp_path), monkeypatch)

    # The finished phases are loaded, the stopped one trains its remaining epochs.
    wanted = {"pretrain": 1, "train": 3, "continue": 2}
    assert before[phase] == epoch
    left = {p: wanted[p] - before.get(p, 0) for p in wanted}
    assert after == {p: n for p, n in left.items() if n}
    # Every epoch's log and time is kept across the stop.
    assert results["epochs"] == 5 and len(results["time_per_epoch"]) == 5
    assert len(results["pretrain_time_per_epoch"]) == 1
    lengths = {key: len(values) for key, values in results["history"].items()}
    assert lengths == {key: len(values) for key, values in reference["history"].items()}
    assert lengths["loss"] == 5
    assert results["resumed"] is True and "resumed" not in reference
    # The same epochs were trained: every epoch's order and random draws come
    # from (seed, epoch) or from a checkpointed state, so the stop leaves no trace.
    assert results["test_loss"] == reference["test_loss"]
    assert results["history"]["loss"] == reference["history"]["loss"]
    if phase == "continue":
        # The BB phase was restored as it was trained (same seed, same arithmetic).
        assert results["first_phase"]["test_error"] == reference["first_phase"]["test_error"]
        assert results["first_phase"]["sparsity"] == reference["first_phase"]["sparsity"]
    # The checkpoints go once the results are saved.
    run_dir = tmp_path / "stopped"
    assert (run_dir / "results.json").is_file()
    assert not (run_dir / "checkpoints").exists()


def test_a_stop_while_a_finished_phase_is_saved_loses_no_epoch(tmp_path, monkeypatch):
    finish = resume.PhaseCheckpoints.finish

    def stop_before_saving(self, phase, model):
        if phase == "train":
            raise KeyboardInterrupt
        finish(self, phase, model)

    monkeypatch.setattr(resume.PhaseCheckpoints, "finish", stop_before_saving)
    with pytest.raises(KeyboardInterrupt):
        training.run(_config(tmp_path))
    monkeypatch.setattr(resume.PhaseCheckpoints, "finish", finish)
    results, after = _run(_config(tmp_path), monkeypatch)
    # The train phase's three epochs are not trained again; DBB's two are.
    assert after == {"continue": 2}
    assert results["epochs"] == 5
    assert not (tmp_path / "stopped" / "checkpoints").exists()


def test_checkpoints_of_another_configuration_are_refused(tmp_path, monkeypatch):
    _run(_config(tmp_path), monkeypatch, interrupt=("train", 1))
    with pytest.raises(ValueError, match="differs in lr"):
        training.run(_config(tmp_path, lr=2e-3))
    with open(tmp_path / "stopped" / "checkpoints" / resume.CONFIG_FILE) as f:
        assert json.load(f)["lr"] == 1e-3


def test_resume_needs_a_run_name():
    with pytest.raises(ValueError, match="`run_name`"):
        training.RunConfig(model="lenet_300_100", dataset="digits", resume=True)


def test_the_recorder_drops_epochs_logged_after_the_last_checkpoint(tmp_path):
    path = os.path.join(tmp_path, "train-epochs.jsonl")
    with open(path, "w") as f:
        for epoch in range(3):
            f.write(json.dumps({"epoch": epoch, "time": 1.0, "logs": {"loss": epoch}}) + "\n")
    recorder = resume.EpochRecorder(path)
    # The backup had saved after epoch 1 (index 1), so the fit resumes at 2.
    recorder.on_epoch_begin(2)
    recorder.on_epoch_end(2, {"loss": 9.0})
    assert recorder.history == {"loss": [0.0, 1.0, 9.0]}
    assert [e["logs"]["loss"] for e in recorder.read()] == [0.0, 1.0, 9.0]


def test_a_run_carried_to_another_machine_by_bench_inflight_ends_as_if_never_stopped(
    tmp_path, monkeypatch
):
    from bench import inflight

    here, there, archives = tmp_path / "here", tmp_path / "there", str(tmp_path / "inflight")
    reference, _ = _run(_config(here, run_name="whole"), monkeypatch)
    _run(_config(here), monkeypatch, interrupt=("train", 2))
    (here / "stopped" / "command.txt").write_text("python -m bench.paper --seeds 4\n")

    manifest = inflight.save(str(here), archives)
    # Only the unfinished run is packed, with how far each phase got.
    assert set(manifest) == {"stopped"}
    assert manifest["stopped"]["progress"] == {"pretrain": "finished", "train": 2}
    assert manifest["stopped"]["command"] == "python -m bench.paper --seeds 4"
    assert inflight.restore(str(there), archives) == ["python -m bench.paper --seeds 4"]
    results, after = _run(_config(there), monkeypatch)
    assert after == {"train": 1, "continue": 2}
    assert results["history"]["loss"] == reference["history"]["loss"]
    assert results["test_loss"] == reference["test_loss"]

    # Saved again once finished there, the run's archive goes.
    assert inflight.save(str(there), archives) == {}
    assert not os.listdir(archives)


def test_an_archive_over_the_size_limit_keeps_the_previous_one(tmp_path, capsys):
    from bench import inflight

    runs, archives = tmp_path / "runs", str(tmp_path / "inflight")
    checkpoints = runs / "long" / "checkpoints"
    (checkpoints / "train").mkdir(parents=True)
    (checkpoints / "train-epochs.jsonl").write_text('{"epoch": 0}\n')
    weights = checkpoints / "train" / "latest.weights.h5"
    weights.write_bytes(np.random.default_rng(0).bytes(50_000))  # does not compress
    first = inflight.save(str(runs), archives, max_mb=0.1)
    archive = tmp_path / "inflight" / "long.tar.gz"
    packed = archive.read_bytes()

    # A finished phase doubles the checkpoints: past the limit, nothing changes.
    weights.write_bytes(np.random.default_rng(1).bytes(100_000))
    (checkpoints / "train-epochs.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    assert inflight.save(str(runs), archives, max_mb=0.1) == first
    assert first["long"]["progress"] == {"train": 1}
    assert archive.read_bytes() == packed
    assert sorted(os.listdir(archives)) == ["long.tar.gz", "manifest.json"]
    assert "long: packs to 0.1 MB, over --max-mb 0.1; its archive" in capsys.readouterr().err
    assert inflight.save(str(runs), archives, max_mb=1)["long"]["progress"] == {"train": 2}
    with pytest.raises(ValueError, match="`max_mb` must be a positive"):
        inflight.save(str(runs), archives, max_mb=0)


def test_the_launch_command_names_a_module_of_the_current_folder():
    from bench import run

    assert run.launch_command(["bench/paper.py", "--seeds", "1"]) == (
        "python -m bench.paper --seeds 1"
    )
    assert run.launch_command(["bench/__main__.py", "--quick"]) == "python -m bench --quick"
    assert run.launch_command(["/usr/bin/tool", "a b"]) == "python /usr/bin/tool 'a b'"
