import json
import os
import subprocess

import keras
import numpy as np
import pytest

import train
from tfsparse import training


def test_main_digits_one_epoch(tmp_path):
    out = tmp_path / "runs"
    results = train.main(
        [
            "--model",
            "lenet_300_100",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--run-name",
            "smoke",
            "--verbose",
            "0",
        ]
    )
    run_dir = out / "smoke"
    assert (run_dir / "model.keras").is_file()
    with open(run_dir / "results.json") as f:
        saved = json.load(f)
    for key in (
        "dataset",
        "model",
        "method",
        "params",
        "test_accuracy",
        "test_error",
        "epochs",
        "time_per_epoch",
        "total_time",
        "versions",
        "args",
    ):
        assert key in saved, key
    assert saved == json.loads(json.dumps(results))
    assert saved["dataset"] == "digits" and saved["method"] == "dense"
    assert saved["params"] == 50_610  # 64*300+300 + 300*100+100 + 100*10+10
    assert saved["epochs"] == 1 and len(saved["time_per_epoch"]) == 1
    assert abs(saved["test_error"] + saved["test_accuracy"] - 1) < 1e-9
    assert set(saved["versions"]) == {
        "python",
        "tensorflow",
        "keras",
        "tensorflow_probability",
        "ai_edge_litert",
        "tfsparse_commit",
    }
    # Run from this checkout, the record names its commit.
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert saved["versions"]["tfsparse_commit"].split("+")[0] == head.strip()
    assert saved["args"]["batch_size"] == 128 and saved["args"]["lr"] == 1e-3

    # The saved model reproduces the trained model's predictions.
    from tfsparse import data

    x_test = data.load("digits").test[0][:32]
    reloaded = keras.models.load_model(run_dir / "model.keras")
    trained_error = 1 - reloaded.evaluate(*data.load("digits").test, verbose=0)[1]
    np.testing.assert_allclose(trained_error, saved["test_error"], atol=1e-6)
    assert reloaded.predict(x_test, verbose=0).shape == (32, 10)


def test_reload_gives_same_predictions(tmp_path):
    config = training.RunConfig(
        model="lenet_300_100", dataset="digits", epochs=1, verbose=0, validation_split=0
    )
    from tfsparse import data

    splits = data.load("digits", validation_split=0)
    model = training.compile_model(training.build_model(config, splits), config)
    history, times = training.fit(model, splits, config)
    assert "val_loss" not in history.history  # validation_split 0: no validation.
    assert len(times) == 1
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = splits.test[0]
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reloaded.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


def test_default_run_name():
    args = train.parse_args(["--model", "lenet5_caffe", "--dataset", "/data/mnist-10k.npz"])
    assert args.run_name.startswith("lenet5_caffe-mnist-10k-")


def test_cosine_schedule_decays_over_the_training(tmp_path):
    from tfsparse import data

    args = train.parse_args(
        [
            "--model",
            "lenet_300_100",
            "--dataset",
            "digits",
            "--epochs",
            "2",
            "--lr",
            "0.004",
            "--lr-schedule",
            "cosine",
            "--verbose",
            "0",
        ]
    )
    splits = data.load("digits")
    model = training.compile_model(training.build_model(args, splits), args, splits)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.004)
    training.fit(model, splits, args)
    assert float(model.optimizer.learning_rate) == 0.0  # decayed to 0 at the last step


def test_train_with_a_flops_budget(tmp_path):
    results = training.run(
        train.parse_args(
            [
                "--model",
                "lenet_300_100",
                "--dataset",
                "digits",
                "--method",
                "hard_concrete",
                "--target-flops",
                "0.4",
                "--epochs",
                "8",
                "--out",
                str(tmp_path),
                "--verbose",
                "0",
            ]
        )
    )
    assert results["history"]["cost_target"][-1] == pytest.approx(0.4)
    assert results["sparsity"]["total"]["flops_fraction"] <= 0.4 + 1e-6
    assert results["sparsity"]["total"]["flops_fraction"] > 0.3


def test_a_bad_configuration_names_its_field_and_its_option(capsys):
    with pytest.raises(ValueError, match="`prune_rate` must be in"):
        training.RunConfig(model="lenet_300_100", dataset="digits", prune_rate=1.5)
    with pytest.raises(ValueError, match="`model` must be one of"):
        training.RunConfig(model="lenet", dataset="digits")
    with pytest.raises(TypeError, match="`epochs` must be an integer"):
        training.RunConfig(model="lenet_300_100", dataset="digits", epochs=2.5)
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "lenet_300_100", "--dataset", "digits", "--epochs", "0"])
    assert "--epochs must be in [1, inf]" in capsys.readouterr().err


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(method="bb", settings={"lam": 0.1}), "lam"),
        (dict(method="npn", ramp=True), "ramp"),
        (dict(settings={"lam": 0.1}), "settings"),
        (dict(target_flops=0.3), "target_flops"),
        (dict(pretrain_epochs=2), "pretrain_epochs"),
        (dict(lr_drops=((0.7, 0.01),)), "lr_drops"),  # the schedule is constant
        (dict(lr_schedule="step", lr_drops=((0.7, 0.1), (0.5, 0.01))), "`lr_drops` must be"),
    ],
)
def test_a_setting_the_method_does_not_take_is_refused_when_the_run_is_configured(
    changes, message
):
    with pytest.raises((ValueError, TypeError), match=message):
        training.RunConfig(model="lenet_300_100", dataset="digits", **changes)


def test_the_command_line_gives_the_configuration_the_library_takes():
    config = train.parse_args(
        ["--model", "lenet_300_100", "--dataset", "digits", "--method", "bb"]
        + ["--set", "kl_weight=0.5"]
        + ["--dbb-epochs", "3", "--target-flops", "0.5", "--run-name", "r"]
        + ["--lr-schedule", "step", "--lr-drops", "0.5:0.1", "0.7:0.01"]
    )
    assert config == training.RunConfig(
        model="lenet_300_100",
        dataset="digits",
        method="bb",
        settings={"kl_weight": 0.5},
        continue_epochs=3,
        target_flops=0.5,
        run_name="r",
        lr_schedule="step",
        lr_drops=[[0.5, 0.1], [0.7, 0.01]],  # as a record's JSON holds them
    )
    assert config.lr_drops == ((0.5, 0.1), (0.7, 0.01))


def test_weight_decay_is_plain_l2_or_under_hard_concrete_gates():
    from tfsparse import data

    splits = data.load("digits")
    config = training.RunConfig(
        model="lenet_300_100", dataset="digits", method="bb", weight_decay=0.01
    )
    dense = training.build_model(config, splits)
    kernels = [layer.kernel for layer in dense.layers if hasattr(layer, "kernel")]
    expected = sum(0.005 * float(np.sum(np.square(k.numpy()))) for k in kernels)
    np.testing.assert_allclose(float(sum(dense.losses)), expected, rtol=1e-5)
    # BB's code decays every weight: the kernels keep their L2.
    sparse, _ = training.build_sparse(config, splits)
    sparse_kernels = [v for v in sparse.trainable_weights if v.regularizer is not None]
    assert len(sparse_kernels) == len(kernels) == 3
    assert sparse.gated_weight_decay is None
    # The L0 code's decay counts each weight with the chance it is kept.
    l0, _ = training.build_sparse(config.replace(method="hard_concrete"), splits)
    assert not [v for v in l0.trainable_weights if v.regularizer is not None]
    assert l0.gated_weight_decay.weight_decay == 0.01
    assert len(l0.gated_weight_decay.layers) == 3
    # Gates on single weights: the term would not see them; the L2 stays.
    weight_level = config.replace(method="hard_concrete", settings={"level": "weight"})
    single, _ = training.build_sparse(weight_level, splits)
    assert single.gated_weight_decay is None
    assert [v for v in single.trainable_weights if v.regularizer is not None]
