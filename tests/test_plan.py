"""bench.plan: a suite's wall time projected from its runs' phases, timed untrained."""

import json

import pytest

from bench import plan
from tfsparse import data


def test_a_run_is_planned_phase_by_phase_as_training_run_trains_it():
    row = plan.plan_run(
        "bb+dbb",
        "lenet_300_100",
        "bb",
        3,
        {"pretrain_epochs": 2, "continue_epochs": 1, "batch_size": 32},
        "digits",
        steps=4,
    )
    phases = row["phases"]
    assert [(p["phase"], p["epochs"]) for p in phases] == [
        ("pretrain", 2),
        ("train", 3),
        ("continue", 1),
    ]
    for p in phases:
        assert p["step_seconds"] > 0 and p["validation_seconds"] > 0
        assert p["epoch_seconds"] == pytest.approx(
            p["steps_per_epoch"] * p["step_seconds"] + p["validation_seconds"]
        )
        assert p["hours"] == pytest.approx(p["epochs"] * p["epoch_seconds"] / 3600)
    # The run's own training split (10 % held out) in its batches of 32.
    train = data.load("digits", validation_split=0.1, seed=0).train[0]
    assert {p["steps_per_epoch"] for p in phases} == {data.steps_per_epoch(len(train), 32)}
    assert row["hours"] == pytest.approx(sum(p["hours"] for p in phases))


def test_a_dense_run_has_one_phase_and_the_table_sums_by_network():
    row = plan.plan_run("dense", "lenet_300_100", "dense", 2, {}, "digits", steps=3)
    assert [p["phase"] for p in row["phases"]] == ["train"]
    rows = [{"suite": "s", **row}, {"suite": "s", **row, "label": "again"}]
    text = plan.table(rows)
    assert f"| | lenet_300_100 | all runs | | | | {2 * row['hours']:.2f} |" in text
    assert text.splitlines()[-1] == f"| | all | | | | | **{2 * row['hours']:.2f}** |"


def test_bad_steps_are_refused(capsys):
    with pytest.raises(SystemExit):
        plan.main(["arch", "--steps", "2"])
    assert "--steps must be at least 3" in capsys.readouterr().err


@pytest.fixture
def tiny_suite(monkeypatch):
    """A suite "tiny" of two LeNet-300-100 runs on scikit-learn's digits."""
    from bench import suites

    monkeypatch.setitem(
        suites.SUITES,
        "tiny",
        [
            ("dense", "lenet_300_100", "dense", 1, {}),
            ("hc", "lenet_300_100", "hard_concrete", 2, {}),
        ],
    )
    monkeypatch.setitem(suites.DATASETS, "tiny", "digits")


def test_a_suite_plan_keeps_each_run_as_it_is_timed(tmp_path, tiny_suite):
    out = tmp_path / "plan.jsonl"
    rows = plan.plan_suite("tiny", steps=3, out=str(out), measured={"threads": 1})
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["suite"], r["label"], r["threads"]) for r in written] == [
        ("tiny", "dense", 1),
        ("tiny", "hc", 1),
    ]
    assert [r["hours"] for r in written] == [r["hours"] for r in rows]


def test_labels_pick_the_runs_and_jit_compile_reaches_each_phase(tiny_suite, monkeypatch):
    compiled = []
    time_phase = plan.time_phase

    def recording(model, *args):
        result = time_phase(model, *args)
        compiled.append(model.jit_compile)
        return result

    monkeypatch.setattr(plan, "time_phase", recording)
    rows = plan.plan_suite("tiny", steps=3, labels=["hc"], jit_compile=True)
    assert [r["label"] for r in rows] == ["hc"]
    assert compiled == [True]


def test_unknown_labels_are_refused_with_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        plan.main(["arch", "--labels", "npn", "nope"])
    err = capsys.readouterr().err
    assert "--labels: nope not in the suites' runs:" in err and "dense-long" in err
