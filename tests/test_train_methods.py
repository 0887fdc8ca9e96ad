"""train.py with each sparsity method: short runs on digits, end to end."""

import json

import pytest

import train


def _run(tmp_path, *extra):
    return train.main(
        [
            "--model",
            "lenet_300_100",
            "--dataset",
            "digits",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--run-name",
            "run",
            "--verbose",
            "0",
            *extra,
        ]
    )


def test_npn_with_export_writes_before_after_reports(tmp_path, capsys):
    results = _run(tmp_path, "--method", "npn", "--set", "lam=0.1", "--export")
    assert results["method"] == "npn"
    assert results["sparsity"]["units_total"] == [64, 300, 100]
    export = results["export"]
    for stage in ("before", "after"):
        assert export[stage]["tflite"]["parity"]["ok"]
    assert (
        export["after"]["summary"]["weights_total"] <= export["before"]["summary"]["weights_total"]
    )
    printed = capsys.readouterr().out
    assert "TFLite size (KiB)" in printed and "units kept: 64-300-100" in printed
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["history"]["k"]  # the scheduler's values reach the history


def test_bb_then_dbb_records_both_phases(tmp_path):
    results = _run(tmp_path, "--method", "bb", "--dbb-epochs", "1", "--pretrain-epochs", "1")
    assert results["first_phase"]["method"] == "bb"
    assert len(results["time_per_epoch"]) == 3  # 2 BB epochs + 1 DBB epoch
    assert len(results["pretrain_time_per_epoch"]) == 1
    gates = results["sparsity"]["gates"]
    assert all(g["input_dependent"] for g in gates)
    assert all(g["avg_active_units"] <= g["units_kept"] for g in gates)


def test_targeted_dropout_with_final_pruning(tmp_path):
    results = _run(tmp_path, "--method", "targeted_dropout", "--ramp", "--prune-rate", "0.9")
    # 90 % of each hidden kernel column is zero after pruning.
    assert results["sparsity"]["total"]["weights_fraction"] < 0.2


def test_final_pruning_takes_the_level_the_recipe_gave(tmp_path, monkeypatch):
    from tfsparse import training

    levels = []
    monkeypatch.setattr(
        training, "prune_by_magnitude", lambda model, rate, level: levels.append(level)
    )
    # Under a budget targeted dropout is unit level; without one, weight level.
    _run(tmp_path, "--method", "targeted_dropout", "--target-flops", "0.5", "--prune-rate", "0.5")
    _run(tmp_path, "--method", "targeted_dropout", "--prune-rate", "0.5", "--run-name", "w")
    assert levels == ["unit", "weight"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "npn", "--set", "lam"], "KEY=VALUE"),
        (["--method", "npn", "--dbb-epochs", "2"], "--continue-epochs needs"),
        (["--prune-rate", "1.5"], "--prune-rate"),
    ],
)
def test_bad_command_lines_are_refused(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        _run(tmp_path, *argv)
    assert message in capsys.readouterr().err
