"""Checkpoints that let an interrupted `tfsparse.training.run` continue where it stopped.

A run has up to three phases, each one `fit`: `"pretrain"` (the dense network),
`"train"` (the method, or the dense network) and `"continue"` (the method that
continues the first one's gates: DBB after BB). With `RunConfig.resume`, each
phase checkpoints every epoch into `<out>/<run_name>/checkpoints/<phase>/`
(`keras.callbacks.BackupAndRestore`: weights, both optimizers' state, the
epoch; the gates' schedules are functions of the epoch, so they continue
too), and its per-epoch logs and wall times into `<phase>-epochs.jsonl`. A
finished phase leaves its weights in `<phase>.weights.h5`; started again with
the same configuration and `run_name`, the run loads the finished phases
instead of training them and resumes the unfinished one at its last finished
epoch. Each epoch's data order and the draws of random layers outside the
gates come from the seed and the epoch (`tfsparse.epoch_data`), and the
gates' random states are in their weights, so a resumed run trains the
epochs an uninterrupted one would (a test checks that it ends with the same
loss, bit for bit). The backup is written
before the epoch's log line, so a stop between the two loses that line (the
epoch's logs and time), not its training.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import keras

CONFIG_FILE = "config.json"
# Fields that say where a run goes and how it talks, not what it computes.
_LOGISTICS = ("out", "run_name", "verbose", "resume")


class EpochRecorder(keras.callbacks.Callback):
    """Each epoch's logs (`history`) and wall time in seconds (`times`),
    training plus validation; with `path`, also appended there as JSON lines,
    and a resumed fit first reads back the epochs before the one it starts at."""

    def __init__(self, path: str | None = None):
        super().__init__()
        self.path = path
        self.entries: list[dict] = []  # {"epoch", "time", "logs"}, as in the file
        self._start = None
        self._loaded = False

    @property
    def history(self) -> dict[str, list[float]]:
        history = {}
        for entry in self.entries:
            for key, value in entry["logs"].items():
                history.setdefault(key, []).append(value)
        return history

    @property
    def times(self) -> list[float]:
        return [entry["time"] for entry in self.entries]

    def on_epoch_begin(self, epoch, logs=None):
        if not self._loaded:
            self._loaded = True
            # An epoch logged after the last checkpoint runs again: drop it.
            self.entries = [e for e in self.read() if e["epoch"] < epoch]
            if self.path:
                with open(self.path, "w") as f:
                    f.writelines(json.dumps(e) + "\n" for e in self.entries)
        self._start = time.perf_counter()

    def on_train_end(self, logs=None):
        if not self._loaded:
            # No epoch ran: the backup held every epoch (a stop came after the
            # last one), so every recorded epoch stands.
            self.load_all()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        logs = {key: float(value) for key, value in (logs or {}).items()}
        entry = {"epoch": epoch, "time": seconds, "logs": logs}
        self.entries.append(entry)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def read(self) -> list[dict]:
        if not self.path or not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def load_all(self):
        """Reads back every recorded epoch (a finished phase's)."""
        self._loaded = True
        self.entries = self.read()


class PhaseCheckpoints:
    """The checkpoints of `config`'s run, one set per phase (none without
    `config.resume`). The phases' configurations differ in their epochs; the
    run's own is the one `start` checks."""

    def __init__(self, config):
        self.folder = (
            os.path.join(config.out, config.run_name, "checkpoints") if config.resume else None
        )
        self.resumed = False

    @classmethod
    def start(cls, config) -> PhaseCheckpoints:
        """The run's checkpoints, when it starts: checks that any already
        there were made by the same configuration and sets `resumed` (an
        earlier process trained part of this run)."""
        checkpoints = cls(config)
        if not checkpoints.folder:
            return checkpoints
        os.makedirs(checkpoints.folder, exist_ok=True)
        mine = _computing_fields(config)
        path = os.path.join(checkpoints.folder, CONFIG_FILE)
        if os.path.exists(path):
            with open(path) as f:
                theirs = json.load(f)
            differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if differ:
                raise ValueError(
                    f"The checkpoints in {checkpoints.folder} were made by another "
                    f"configuration (it differs in {', '.join(differ)}): delete that "
                    "folder to start over, or choose another `run_name`."
                )
        else:
            with open(path, "w") as f:
                json.dump(mine, f, indent=2)
        checkpoints.resumed = any(name != CONFIG_FILE for name in os.listdir(checkpoints.folder))
        return checkpoints

    def remove(self):
        """Deletes the checkpoints (the run has saved its results)."""
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def recorder(self, phase: str) -> EpochRecorder:
        if self.folder:
            os.makedirs(self.folder, exist_ok=True)
        return EpochRecorder(self.folder and os.path.join(self.folder, f"{phase}-epochs.jsonl"))

    def callbacks(self, phase: str) -> list[keras.callbacks.Callback]:
        """What `fit` puts first for `phase`: its per-epoch backup."""
        if not self.folder:
            return []
        # Kept when the fit ends: `finish` removes it once the phase's weights
        # are safely written, so a stop in between loses no epoch.
        return [keras.callbacks.BackupAndRestore(self._backup(phase), delete_checkpoint=False)]

    def _backup(self, phase):
        return os.path.join(self.folder, phase)

    def _weights(self, phase):
        return os.path.join(self.folder, f"{phase}.weights.h5")

    def finished(self, phase: str) -> bool:
        return bool(self.folder) and os.path.exists(self._weights(phase))

    def finish(self, phase: str, model: keras.Model):
        """Saves a finished phase's weights, then drops its per-epoch backup.
        The file appears whole or not at all (written aside, then renamed),
        so a stop while it is written cannot leave a truncated phase."""
        if not self.folder:
            return
        partial = os.path.join(self.folder, f"{phase}-partial.weights.h5")
        model.save_weights(partial)
        os.replace(partial, self._weights(phase))
        shutil.rmtree(self._backup(phase), ignore_errors=True)

    def restore(self, phase: str, model: keras.Model):
        """Loads a finished phase's weights (and optimizer state) into `model`."""
        # A gated model builds its optimizers when compiled; a plain one when
        # it first trains, and its weights file holds the optimizer's state.
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self._weights(phase))


def _computing_fields(config) -> dict:
    fields = dataclasses.asdict(config)
    return json.loads(
        json.dumps({k: v for k, v in fields.items() if k not in _LOGISTICS}, default=str)
    )
