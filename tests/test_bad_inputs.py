"""Bad input across the public API: each raises ValueError or TypeError whose
message names the parameter (and what is accepted), and leaves no file."""

import os

import keras
import numpy as np
import pytest

import tfsparse
from tfsparse import data, recipes, schedules
from tfsparse.gates import (
    BetaBernoulliGate,
    DependentBetaBernoulliGate,
    HardConcreteGate,
    NPNGate,
    TargetedDropoutGate,
)
from tfsparse.layers import SparseConv2D, SparseDense, TakeFeatures


def _mlp():
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(3)]
    )


def _budgeted_model(budget):
    inputs = keras.Input((4,))
    return tfsparse.SparseModel(inputs, keras.layers.Dense(2)(inputs), budget=budget)


def _normalized_model():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    gated = HardConcreteGate(dataset_size=10)(hidden)
    normalized = keras.layers.LayerNormalization()(gated)
    return keras.Model(inputs, keras.layers.Dense(2)(normalized))


def _closed_normalized_model():
    model = _normalized_model()
    gate = next(layer for layer in model.layers if isinstance(layer, HardConcreteGate))
    gate.log_alpha.assign(np.array([-5.0, 5.0, 5.0, 5.0], "float32"))
    return model


BAD = [
    # gates: rates, strengths, temperatures, k
    (lambda: HardConcreteGate(lam=-0.1), "lam"),
    (lambda: HardConcreteGate(init_drop_rate=0.0), "init_drop_rate"),
    (lambda: HardConcreteGate(per_example="yes"), "per_example"),
    (lambda: HardConcreteGate(init_drop_rate=1.5), "init_drop_rate"),
    (lambda: HardConcreteGate(temperature=0.0), "temperature"),
    (lambda: HardConcreteGate(temperature=-1.0), "temperature"),
    (lambda: HardConcreteGate(structure="channel"), "structure"),
    (lambda: HardConcreteGate(dataset_size=0), "dataset_size"),
    (lambda: HardConcreteGate(dataset_size=2.5), "dataset_size"),
    (lambda: HardConcreteGate(group_size=0), "group_size"),
    (lambda: HardConcreteGate(lr_multiplier=0.0), "lr_multiplier"),
    (lambda: HardConcreteGate(lam=float("nan")), "lam"),
    (lambda: HardConcreteGate(lam="big"), "lam"),
    (lambda: NPNGate(k=-1.0), "`k`"),
    (lambda: NPNGate(k_plastic=-7.0), "k_plastic"),
    (lambda: NPNGate(lam=-1.0), "lam"),
    (lambda: NPNGate(mode="shrink"), "mode"),
    (lambda: NPNGate(estimator="reinforce"), "estimator"),
    (lambda: NPNGate(mode="expand"), "init_size"),
    (lambda: NPNGate(mode="expand", init_size=0), "init_size"),
    (lambda: NPNGate(mode="prune", init_size=3), "init_size"),
    (lambda: BetaBernoulliGate(alpha=0.0), "alpha"),
    (lambda: BetaBernoulliGate(temperature=0.0), "temperature"),
    (lambda: BetaBernoulliGate(threshold=-1.0), "threshold"),
    (lambda: BetaBernoulliGate(structure="weight"), "structure"),
    (lambda: DependentBetaBernoulliGate(prior_variance=0.0), "prior_variance"),
    (lambda: DependentBetaBernoulliGate(freeze_bb="yes"), "freeze_bb"),
    (lambda: TargetedDropoutGate(alpha=1.5), "alpha"),
    (lambda: TargetedDropoutGate(alpha=-0.1), "alpha"),
    (lambda: TargetedDropoutGate(gamma=2.0), "gamma"),
    (lambda: TargetedDropoutGate(structure="block"), "structure"),
    # layers
    (lambda: SparseDense(0), "units"),
    (lambda: SparseDense(4, kernel_gate="l0"), "kernel_gate"),
    (lambda: SparseConv2D(4, 0), "kernel_size"),
    (lambda: SparseConv2D(4, 3, padding="full"), "padding"),
    (lambda: SparseConv2D(0, 3), "filters"),
    (lambda: TakeFeatures([]), "indices"),
    (lambda: TakeFeatures([-1, 2]), "indices"),
    # a gate on a layer without a channel axis
    (lambda: HardConcreteGate()(keras.Input(shape=(None,))), "channel"),
    # sparsify
    (lambda: tfsparse.sparsify(_mlp(), "magnitude", dataset_size=10), "method"),
    (lambda: tfsparse.sparsify(_mlp(), "npn"), "dataset_size"),
    (lambda: tfsparse.sparsify(_mlp(), "npn", dataset_size=-5), "dataset_size"),
    # One hidden-unit gate (Dense(6)'s outputs), two sizes.
    (
        lambda: tfsparse.sparsify(
            _mlp(), "npn", dataset_size=10, mode="expand", init_size=[2, 2], verbose=0
        ),
        "init_size",
    ),
    (lambda: tfsparse.sparsify(_mlp(), "npn", dataset_size=10, lamda=0.1), "lamda"),
    (lambda: tfsparse.sparsify(_mlp(), "bb", dataset_size=10, level="weight"), "level"),
    (lambda: tfsparse.sparsify(_mlp(), "hard_concrete", dataset_size=10, level="row"), "level"),
    (lambda: tfsparse.sparsify(_mlp(), "npn", dataset_size=10, group_by="time"), "group_by"),
    (lambda: tfsparse.sparsify(_mlp(), "npn", dataset_size=10, lam=-1.0), "lam"),
    (lambda: tfsparse.sparsify(_mlp(), "targeted_dropout", alpha=3.0), "alpha"),
    (
        lambda: tfsparse.sparsify(
            keras.Sequential([keras.layers.Dense(3)]), "npn", dataset_size=10
        ),
        "not built",
    ),
    # a SparseModel's budget
    (lambda: _budgeted_model({"kind": "macs", "target": 0.3}), "kind"),
    (lambda: _budgeted_model({"kind": "flops"}), "budget"),
    (lambda: _budgeted_model({"kind": "flops", "target": 0.3, "ramp": 2}), "budget"),
    (lambda: _budgeted_model({"kind": "params", "target": 1.5}), "target_params"),
    # pruning
    (lambda: tfsparse.prune_by_magnitude(_mlp(), 1.5), "rate"),
    (lambda: tfsparse.prune_by_magnitude(_mlp(), -0.1), "rate"),
    (lambda: tfsparse.prune_by_magnitude(_mlp(), 0.5, level="block"), "level"),
    # schedules and the scheduler
    (lambda: schedules.Stages([5, 2], [1, 2, 3]), "boundaries"),
    (lambda: schedules.Stages([2], [1.0]), "values"),
    (lambda: schedules.Linear([]), "points"),
    (lambda: schedules.Linear([(5, 1.0), (2, 0.0)]), "points"),
    (lambda: schedules.Constant(1.0, unit="hour"), "unit"),
    (lambda: schedules.npn_stages(7.0, 10, 5), "stage1"),
    (lambda: schedules.targeted_dropout_ramp(1.5, 0.5, 100), "alpha"),
    (lambda: schedules.targeted_dropout_ramp(0.5, 0.5, 0), "total_steps"),
    (lambda: schedules.get("linear"), "schedule"),
    (lambda: tfsparse.SparsityScheduler(schedules=[1, 2]), "schedules"),
    (lambda: tfsparse.SparsityScheduler(harden_at=-1), "harden_at"),
    (lambda: tfsparse.SparsityScheduler(expand_between=(5, 2)), "expand_between"),
    (lambda: tfsparse.SparsityScheduler(expand_size=0), "expand_size"),
    # recipes
    (lambda: recipes.recipe("l1", 10), "method"),
    (lambda: recipes.recipe("npn", 0), "epochs"),
    (lambda: recipes.recipe("targeted_dropout", 10, ramp=True), "steps_per_epoch"),
    (lambda: recipes.recipe("hard_concrete", 10, harden_fraction=0), "harden_fraction"),
    (lambda: recipes.recipe("npn", 10, harden_fraction=0.7), "harden_fraction"),
    (lambda: recipes.optimizer(0.0), "learning_rate"),
    (lambda: recipes.optimizer(1e-3, schedule="exponential"), "schedule"),
    (lambda: recipes.optimizer(1e-3, schedule="step"), "total_steps"),
    (lambda: recipes.optimizer(1e-3, "step", 10, drops=((0.8, 0.1), (0.5, 0.01))), "drops"),
    (lambda: recipes.optimizer(1e-3, "step", 10, drops=((1.0, 0.1),)), "drops"),
    (lambda: recipes.optimizer(1e-3, "step", 10, drops=((0.5, 0.0),)), "drops"),
    (lambda: recipes.optimizer(1e-3, "step", 10, drops=(0.5, 0.1)), "drops"),
    (
        lambda: recipes.recipe(
            "targeted_dropout", 10, ramp=True, steps_per_epoch=5, target_flops=0.3
        ),
        "ramp",
    ),
    (lambda: recipes.optimizer(1e-3, schedule="cosine"), "total_steps"),
    (lambda: recipes.optimizer(1e-3, schedule="cosine", total_steps=0), "total_steps"),
    # compaction of an unsupported topology
    (lambda: tfsparse.compact(_closed_normalized_model()), "LayerNormalization"),
    # data
    (lambda: data.load("imagenet"), "imagenet"),
    (lambda: data.load("digits", validation_split=1.0), "validation_split"),
]


@pytest.mark.parametrize("call, parameter", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_names_the_parameter(call, parameter):
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert parameter.lower() in str(error.value).lower()


def test_npz_with_wrong_layout_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((3, 28, 28), "uint8"))
    with pytest.raises(ValueError, match="x_train"):
        data.load(str(path))


def test_truncated_keras_file_is_refused(tmp_path):
    model = tfsparse.sparsify(_mlp(), "npn", dataset_size=10)
    path = tmp_path / "model.keras"
    model.save(path)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises((ValueError, OSError)):
        keras.models.load_model(truncated)


def test_export_to_unwritable_path_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises((ValueError, OSError)):
        tfsparse.export(_mlp(), str(blocker / "export"), tflite=False)
    assert sorted(os.listdir(tmp_path)) == before


def test_export_bad_quantize_names_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        tfsparse.export(_mlp(), str(tmp_path / "out"), quantize="int4")
    assert not (tmp_path / "out").exists()
