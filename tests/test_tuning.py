"""keras-tuner search over sparsity settings, end to end on digits."""

import json
import os

import keras_tuner as kt
import pytest

import tune
from tfsparse import data, recipes, tuning


def test_score_prefers_every_accurate_trial():
    assert tuning.score(0.95, 0.2, 0.9) == pytest.approx(0.2)
    assert tuning.score(0.85, 0.01, 0.9) == pytest.approx(1.05)
    assert tuning.score(0.95, 1.0, 0.9) < tuning.score(0.899, 0.0, 0.9)


def test_three_trial_search_end_to_end(tmp_path):
    result = tune.main(
        [
            "--method",
            "hard_concrete",
            "--model",
            "lenet_300_100",
            "--dataset",
            "digits",
            "--accuracy-target",
            "0.5",
            "--trials",
            "3",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--run-name",
            "t",
            "--confirm-seeds",
            "1",
        ]
    )
    run_dir = tmp_path / "t"
    assert len(result["trials"]) == 3
    assert result["best"]["score"] == min(t["score"] for t in result["trials"])
    assert (run_dir / "pareto.png").stat().st_size > 0
    assert json.loads((run_dir / "tuning.json").read_text())["best"] == result["best"]
    assert result["export"]["tflite"]["parity"]["ok"]
    assert os.path.exists(run_dir / "best" / "model.tflite")
    # The best trial's settings and the defaults, retrained with seed 1.
    confirm = result["confirm"]
    assert confirm["settings"] == {k: result["best"][k] for k in confirm["settings"]}
    for name in ("best", "default"):
        (run,) = confirm["runs"][name]
        assert run["seed"] == 1 and 0.0 <= run["cost"] <= 1.0
        assert confirm["means"][name]["test_accuracy"] == run["test_accuracy"]


@pytest.mark.parametrize("tuner_class", [kt.BayesianOptimization, kt.Hyperband])
def test_hypermodel_works_with_other_tuners(tmp_path, tuner_class):
    splits = data.load("digits")
    hypermodel = tuning.SparsityHyperModel(
        "npn", "lenet_300_100", splits, epochs=2, accuracy_target=0.5
    )
    extra = {"max_epochs": 2} if tuner_class is kt.Hyperband else {"max_trials": 2}
    tuner = tuner_class(
        hypermodel,
        objective=tuning.OBJECTIVE,
        directory=str(tmp_path),
        project_name="p",
        seed=0,
        **extra,
    )
    tuner.search(*splits.train, validation_data=splits.val)
    best = tuner.oracle.get_best_trials(1)[0]
    assert 0.0 <= best.score <= 2.0


@pytest.mark.parametrize("tuner_name", ["random", "bayesian"])
def test_searches_start_from_the_library_defaults(tmp_path, tuner_name):
    args = tune.parse_args(
        [
            "--method",
            "hard_concrete",
            "--model",
            "lenet_300_100",
            "--dataset",
            "digits",
            "--accuracy-target",
            "0.5",
            "--tuner",
            tuner_name,
            "--trials",
            "2",
        ]
    )
    hypermodel = tuning.SparsityHyperModel(
        "hard_concrete", "lenet_300_100", data.load("digits"), epochs=1, accuracy_target=0.5
    )
    tuner = tune.make_tuner(args, hypermodel, str(tmp_path))
    first = tuner.oracle.create_trial("tuner0").hyperparameters.values
    assert {k: first[k] for k in ("lam", "lr_multiplier", "init_drop_rate")} == recipes.DEFAULTS[
        "hard_concrete"
    ]
    assert first["temperature"] == pytest.approx(2 / 3) and first["per_example"] is False
    assert first["lr"] == pytest.approx(1e-3) and first["lr_schedule"] == "constant"
    tuner.oracle.end_trial(tuner.oracle.trials[next(iter(tuner.oracle.trials))])
    second = tuner.oracle.create_trial("tuner0").hyperparameters.values
    assert second["lam"] != first["lam"]  # then the search proper


class _RecordingHyperModel(tuning.SparsityHyperModel):
    """Records each training's result and its model's first initial weight."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs = []

    def fit(self, hp, model, *args, **kwargs):
        first_weight = float(model.trainable_weights[0].numpy().ravel()[0])
        result = super().fit(hp, model, *args, **kwargs)
        self.runs.append({"first_weight": first_weight, **result})
        return result


def test_a_trial_with_several_executions_scores_their_mean(tmp_path):
    args = tune.parse_args(
        [
            "--method",
            "hard_concrete",
            "--model",
            "lenet_300_100",
            "--dataset",
            "digits",
            "--accuracy-target",
            "0.5",
            "--trials",
            "1",
            "--executions-per-trial",
            "2",
        ]
    )
    hypermodel = _RecordingHyperModel(
        "hard_concrete", "lenet_300_100", data.load("digits"), epochs=1, accuracy_target=0.5
    )
    tuner = tune.make_tuner(args, hypermodel, str(tmp_path))
    tuner.search(*hypermodel.splits.train, validation_data=hypermodel.splits.val)
    first, second = hypermodel.runs
    assert first["first_weight"] != second["first_weight"]  # new initial weights
    (trial,) = tuner.oracle.trials.values()
    assert trial.score == pytest.approx((first["score"] + second["score"]) / 2)


def test_tune_rejects_zero_executions_per_trial(capsys):
    with pytest.raises(SystemExit):
        tune.parse_args(
            [
                "--method",
                "npn",
                "--model",
                "lenet_300_100",
                "--dataset",
                "digits",
                "--accuracy-target",
                "0.9",
                "--executions-per-trial",
                "0",
            ]
        )
    assert "--executions-per-trial" in capsys.readouterr().err


def test_fix_holds_settings_through_the_search(tmp_path):
    args = tune.parse_args(
        [
            "--method",
            "npn",
            "--model",
            "lenet_300_100",
            "--dataset",
            "digits",
            "--accuracy-target",
            "0.5",
            "--trials",
            "3",
            "--fix",
            "lr=0.001",
            "--fix",
            "lr_schedule=constant",
            "--fix",
            "k_plastic=12",
        ]
    )
    assert args.fixed == {"lr": 0.001, "lr_schedule": "constant", "k_plastic": 12}
    hypermodel = tuning.SparsityHyperModel(
        "npn", "lenet_300_100", data.load("digits"), epochs=1, accuracy_target=0.5
    )
    tuner = tune.make_tuner(args, hypermodel, str(tmp_path))
    lams = set()
    for _ in range(3):
        trial = tuner.oracle.create_trial("tuner0")
        values = trial.hyperparameters.values
        assert (values["lr"], values["lr_schedule"], values["k_plastic"]) == (
            0.001,
            "constant",
            12,
        )
        lams.add(values["lam"])
        tuner.oracle.end_trial(trial)
    assert len(lams) == 3  # the other settings are still searched


def test_fix_rejects_a_setting_the_method_does_not_search(capsys):
    with pytest.raises(SystemExit):
        tune.parse_args(
            [
                "--method",
                "npn",
                "--model",
                "lenet_300_100",
                "--dataset",
                "digits",
                "--accuracy-target",
                "0.9",
                "--fix",
                "temperature=0.5",
            ]
        )
    error = capsys.readouterr().err
    assert "--fix" in error and "temperature" in error and "k_plastic" in error


def test_a_cosine_trial_decays_over_its_hyperband_round():
    splits = data.load("digits")
    hypermodel = tuning.SparsityHyperModel(
        "hard_concrete", "lenet_300_100", splits, epochs=9, accuracy_target=0.5
    )
    hp = kt.HyperParameters()
    hp.Fixed("lr_schedule", "cosine")
    steps_per_epoch = -(-len(splits.train[0]) // tuning.BATCH_SIZE)
    whole = hypermodel.build(hp).optimizer
    hp.Fixed("tuner/epochs", 9)
    hp.Fixed("tuner/initial_epoch", 3)  # a round that continues epochs 3-8
    round_ = hypermodel.build(hp).optimizer
    # Hyperband restarts the optimizer each round: its step count starts at 0.
    for optimizer in (whole, round_):
        optimizer.iterations.assign(6 * steps_per_epoch)
    assert float(round_.learning_rate) == 0.0  # the round's last step
    assert float(whole.learning_rate) > 0.0  # a third of the whole decay left


def test_a_search_over_the_budget_traces_the_cost_curve(tmp_path):
    result = tune.main(
        [
            "--method",
            "npn",
            "--model",
            "lenet_300_100",
            "--dataset",
            "digits",
            "--accuracy-target",
            "0.3",
            "--trials",
            "3",
            "--epochs",
            "4",
            "--search-target",
            "--no-export",
            "--out",
            str(tmp_path),
            "--run-name",
            "t",
        ]
    )
    for trial in result["trials"]:
        # Each trial trained to its own budget, which its cost meets.
        assert trial["cost"] <= trial["target_flops"] + 1e-6
    assert len({round(t["target_flops"], 6) for t in result["trials"]}) == 3
