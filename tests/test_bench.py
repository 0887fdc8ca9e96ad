import json
import math

import numpy as np
import pytest

import tfsparse
from bench import report, run, settings_grid


def test_run_config_appends_records_and_report(tmp_path):
    out = tmp_path / "r.jsonl"
    for seed in (0, 1):
        run.run_config(
            "lenet_300_100",
            "dense",
            "digits",
            seed,
            1,
            out,
            out=str(tmp_path / "runs"),
            batch_size=256,
            verbose=0,
        )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    r = records[0]
    assert r["config"]["seed"] == 0 and r["args"]["batch_size"] == 256
    assert r["host"]["cpu_count"] >= 1 and "date" in r["host"]

    rows = report.summarize(report.load_records(out))
    assert len(rows) == 1 and rows[0]["runs"] == 2
    table = report.to_markdown(rows)
    assert "| digits | lenet_300_100 | dense | 2 |" in table and "±" in table


def test_report_groups_and_stats():
    def rec(method, err):
        return {
            "dataset": "d",
            "model": "m",
            "method": method,
            "test_error": err,
            "params": 10,
            "time_per_epoch": [1.0, 3.0],
        }

    rows = report.summarize([rec("a", 0.01), rec("a", 0.03), rec("b", 0.05)])
    assert [(r["method"], r["runs"]) for r in rows] == [("a", 2), ("b", 1)]
    assert abs(rows[0]["error_mean"] - 2.0) < 1e-9
    assert abs(rows[0]["error_std"] - 2**0.5) < 1e-9
    assert rows[1]["error_std"] == 0.0 and rows[0]["time_per_epoch"] == 2.0


def test_dashboard_pipeline_on_digits_resumes_and_renders(tmp_path):
    """`python -m bench`'s pipeline end to end at toy scale: every suite's
    LeNet-300-100 rows, TFLite ratios, step times, the table and the plots; a
    second call trains nothing again."""
    from bench import dashboard, table

    mode = {
        **dashboard.QUICK,
        "records": str(tmp_path),
        "runs_dir": str(tmp_path / "runs"),
        "epochs_scale": 0.02,
    }
    text = dashboard.run(mode, models=("lenet_300_100",), dataset="digits", tfmot=())
    rows = {r["method"]: r for r in table.rows(str(tmp_path), "lenet_300_100")}
    assert set(rows) == {
        "dense",
        "hard_concrete",
        "npn-prune",
        "npn-expand",
        "bb",
        "dbb",
        "td-weight",
        "td-unit",
    }
    assert rows["dense"]["size_ratio"] == 1.0 and rows["dense"]["step_time"] == 1.0
    assert rows["td-unit"]["units"] == "300-100 → 150-50"  # pruned to half the units
    assert rows["td-weight"]["weights_kept"] < 0.15  # 90 % of the hidden kernels pruned
    assert rows["dbb"]["size_ratio"] is not None and rows["bb"]["size_ratio"] is None
    assert "| td-unit | 1 |" in text
    for kind in ("tradeoff", "units"):
        assert (tmp_path / f"dashboard_{kind}_lenet_300_100.png").stat().st_size > 0

    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("*.jsonl")}
    dashboard.run(mode, models=("lenet_300_100",), dataset="digits", tfmot=())
    assert {p.name: p.stat().st_size for p in tmp_path.glob("*.jsonl")} == sizes


def test_verdict_picks_the_fewest_flops_within_the_error_margin():
    from bench.table import verdict

    def row(method, error, flops, speedup=None, per_example=None):
        return {
            "method": method,
            "error": (error, 0.0),
            "flops_kept": flops,
            "flops_per_example": per_example,
            "speedup": speedup,
        }

    rows = [
        row("dense", 4.0, 1.0, 1.0),
        row("a", 4.4, 0.10, 5.0),
        row("b", 4.6, 0.02, 9.0),  # fewer FLOPs but 0.6 points worse
        row("c", 4.5, 0.5, 2.0, per_example=0.05),
        row("tfmot 90%", 4.1, 0.1, 1.0),
        row("td-weight", 4.2, 0.01, 1.0),
    ]  # nonzero weights: saves no FLOPs
    text = verdict(rows)
    assert "**c**, 20.0× fewer" in text and "2.0× faster than tfmot" in text
    assert "No method" in verdict([row("dense", 4.0, 1.0), row("a", 9.0, 0.1)])


def test_update_page_rewrites_only_the_marked_block(tmp_path):
    import pytest

    from bench.table import PAGE_END, PAGE_START, update_page

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{PAGE_START}\nold table\n{PAGE_END}\noutro\n")
    update_page(readme, "#### new table\n", str(tmp_path))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n")
    assert "new table" in text and "old table" not in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="generated-block markers"):
        update_page(readme, "x", str(tmp_path))


def test_step_times_are_medians_of_step_gaps_paired_by_round():
    from bench import timing

    # Steps of 1 s with one 9 s hiccup; the first gap (fit start-up) is left out.
    assert timing.median_step([0.0, 5.0, 6.0, 7.0, 16.0, 17.0, 18.0]) == 1.0
    # The machine was twice as slow in round 2: paired ratios do not see it.
    ratios = timing.paired_ratios({"dense": [1.0, 2.0], "gated": [1.5, 3.0]})
    assert list(ratios["gated"]) == [1.5, 1.5] and list(ratios["dense"]) == [1.0, 1.0]


def test_export_bench_measures_only_models_without_a_row_of_their_own(tmp_path):
    """A retrained run gets measured; rows of models that are not on disk
    any more (another checkout's) stay."""
    from bench import export_bench

    def record(label, path):
        return {"config": {"model": "m", "seed": 0, "label": label}, "model_path": str(path)}

    new, gone, kept = tmp_path / "new.keras", tmp_path / "gone.keras", tmp_path / "kept.keras"
    new.write_text("x")
    kept.write_text("x")
    (tmp_path / "l0_npn.jsonl").write_text(
        "\n".join(
            json.dumps(record(label, path))
            for label, path in (("hard_concrete", new), ("npn-prune", gone), ("bb+dbb", kept))
        )
    )
    rows = [
        {"model": "m", "seed": 0, "label": "hard_concrete", "model_path": "old.keras"},
        {"model": "m", "seed": 0, "label": "npn-prune"},
        {"model": "m", "seed": 0, "label": "bb+dbb", "model_path": str(kept)},
        {"model": "m", "seed": 0, "label": "tfmot 90%"},
    ]
    stale, tfmot_missing = export_bench.to_measure("m", 0, rows, str(tmp_path), (0.9,))
    assert stale == {"hard_concrete"} and tfmot_missing  # "dense (tf_keras)" has no row
    rows.append({"model": "m", "seed": 0, "label": "dense (tf_keras)"})
    assert export_bench.to_measure("m", 0, rows, str(tmp_path), (0.9,))[1] is False


def test_settings_grid_records_each_run_once(tmp_path):
    out = tmp_path / "grid.jsonl"
    argv = [
        "--method",
        "hard_concrete",
        "--model",
        "lenet_300_100",
        "--dataset",
        "digits",
        "--settings",
        '{"lam": 0.1}',
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    settings_grid.main(argv)
    settings_grid.main(argv)  # already there: nothing re-run
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["settings"] == {"lam": 0.1} and record["seed"] == 1
    assert 0.0 <= record["test_accuracy"] <= 1.0 and 0.0 < record["cost"] <= 1.0


@pytest.mark.parametrize("text", ["0.05", "{lam: 0.05}"])
def test_settings_grid_rejects_settings_that_are_not_json_objects(text, capsys):
    with pytest.raises(SystemExit):
        settings_grid.parse_args(
            ["--method", "npn", "--model", "lenet_300_100", "--settings", text, "--out", "x.jsonl"]
        )
    assert "--settings" in capsys.readouterr().err


def test_the_paper_table_compares_each_row_with_the_runs_of_its_label(tmp_path, monkeypatch):
    from bench import paper

    def record(seed, units, error):
        return {
            "model": "lenet5_caffe",
            "config": {"label": "l0-sep", "seed": seed},
            "test_error": error / 100,
            "sparsity": {
                "units_kept": units,
                "total": {"weights_fraction": 0.1, "flops_fraction": 0.16},
            },
        }

    rows = [record(0, [9, 18, 60, 25], 1.05), record(1, [9, 16, 60, 25], 1.15)]
    (tmp_path / "paper.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ours = paper.our_rows(str(tmp_path))[("lenet5_caffe", "l0-sep", "final")]
    assert ours["units"] == (9, 17, 60, 25) and ours["seeds"] == 2
    assert ours["error"] == pytest.approx(1.10)
    sep = next(p for p in paper.PAPER_ROWS if p["label"] == "l0-sep")  # 9-18-65-25 at 1.0 %
    assert paper.verdict(sep, ours) == "reproduced"
    assert paper.verdict(sep, {**ours, "error": 0.9}) == "better"
    assert paper.verdict(sep, {**ours, "units": (20, 18, 65, 25), "error": 1.5}) == (
        "short: 11 more units, +0.50 points of error"
    )
    # Fewer units, but the paper's 9-18-65-25 costs 0.1720 of the dense FLOPs.
    assert paper.verdict(sep, {**ours, "flops": 0.2}) == "short: +0.0280 of the dense FLOPs"
    bb = next(
        p for p in paper.PAPER_ROWS if p["model"] == "lenet5_caffe" and p["label"] == "bb+dbb"
    )
    assert bb["error"] is None  # the code release only plots its errors
    assert paper.verdict(bb, {**ours, "units": (13, 25, 150, 54)}) == (
        "6 fewer units, −0.1543 of the dense FLOPs; no published error to compare"
    )
    dbb = next(p for p in paper.PAPER_ROWS if p.get("units_per_example") == (13, 24, 53, 27))
    # 13-24-53-27 units per example cost 0.3021 of the dense FLOPs on tfsparse's count.
    assert paper.verdict(
        dbb, {**ours, "units_per_example": (13, 24, 50, 27), "flops_per_example": 0.35}
    ) == (
        "3 fewer units per example, +0.0479 of the dense FLOPs per example; "
        "no published error to compare"
    )
    table = paper.to_markdown(str(tmp_path))
    assert "9-17-60-25 | 1.10 ± 0.07" in table and "not run yet" in table
    assert "| 9-18-65-25 | 0.1720 | 1.0 |" in table


def test_the_paper_table_sets_bb_beside_the_first_phase_and_dbb_per_example(tmp_path):
    from bench import paper

    def sparsity(units, flops, per_example=None, active=None):
        total = {"weights_fraction": 0.1, "flops_fraction": flops}
        if per_example is not None:
            total["flops_expected_fraction"] = per_example
        gates = [{"avg_active_units": a} for a in active or [None] * len(units)]
        return {"units_kept": units, "total": total, "gates": gates}

    record = {
        "model": "lenet_500_300",
        "config": {"label": "bb+dbb", "seed": 0},
        "test_error": 0.015,
        "sparsity": sparsity([200, 100, 60], 0.05, per_example=0.004, active=[90, 20.4, 9.6]),
        "first_phase": {"test_error": 0.014, "sparsity": sparsity([250, 100, 60], 0.06)},
    }
    (tmp_path / "paper.jsonl").write_text(json.dumps(record) + "\n")
    ours = paper.our_rows(str(tmp_path))
    assert ours["lenet_500_300", "bb+dbb", "first"]["units"] == (250, 100, 60)
    assert ours["lenet_500_300", "bb+dbb", "final"]["flops_per_example"] == 0.004
    rows = paper.to_markdown(str(tmp_path)).splitlines()
    bb = next(r for r in rows if "lenet_500_300 | 294-110-71" in r)
    assert "| 250-100-60 | 1.40 |" in bb and "65 fewer units" in bb
    dbb = next(r for r in rows if "106-29-32 per example" in r)  # 0.0079 of the FLOPs
    assert "| 90-20-10 per example | 1.50 |" in dbb and "0.0500 (0.0040 per example)" in dbb
    assert "47 fewer units per example, −0.0039 of the dense FLOPs per example" in dbb
    assert "| 1 | — |" in bb  # no training time in the record


def test_the_paper_table_gives_each_run_its_hours_with_its_pretraining(tmp_path):
    from bench import paper

    def record(seed, **times):
        phase = {
            "test_error": 0.015,
            "sparsity": {
                "units_kept": [9, 9, 9],
                "total": {"weights_fraction": 0.1, "flops_fraction": 0.1},
            },
        }
        return {
            "model": "lenet_500_300",
            "config": {"label": "bb+dbb", "seed": seed},
            "args": {"pretrain_epochs": 2},
            **phase,
            "first_phase": phase,
            **times,
        }

    path = tmp_path / "paper.jsonl"
    # Two seeds: 1 h + 0.5 h of pretraining, and 2 h + 0.5 h.
    seeds = [
        record(0, total_time=3600, pretrain_time_per_epoch=[900, 900]),
        record(1, total_time=7200, pretrain_time_per_epoch=[1800, 0]),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in seeds))
    ours = paper.our_rows(str(tmp_path))
    assert ours["lenet_500_300", "bb+dbb", "final"]["hours"] == "2.00"
    assert ours["lenet_500_300", "bb+dbb", "first"]["hours"] == "2.00"  # the same runs
    # A record made before pretraining times were kept says its figure lacks them.
    path.write_text(json.dumps(record(0, total_time=3600)) + "\n")
    assert paper.our_rows(str(tmp_path))["lenet_500_300", "bb+dbb", "final"]["hours"] == (
        "1.00 + pretraining"
    )


@pytest.mark.parametrize("model", ["lenet5_caffe", "lenet_300_100"])
def test_the_paper_flops_count_is_summarys_count(model):
    """The FLOPs a paper row's units cost are counted by hand; they must equal
    what `tfsparse.summary` counts for the suite's gated network with as many
    units open."""
    from bench import paper

    rng = np.random.default_rng(0)
    net = tfsparse.sparsify(
        tfsparse.models.get(model)(), "hard_concrete", dataset_size=1000, verbose=0
    )
    closed = {}
    for gate in tfsparse.gates.gates_of(net):
        n = gate.mask_shape[0]
        closed[gate.name] = rng.permutation(n)[: rng.integers(1, n - 1)]
        if model == "lenet5_caffe" and gate.name == "flatten_gate":
            # fc1's inputs from conv2's closed channels are closed too, as a
            # paper counts them (channels last: feature i is channel i % 50).
            in_closed_channels = np.isin(np.arange(n) % 50, closed["conv2_gate"])
            closed[gate.name] = np.union1d(closed[gate.name], np.flatnonzero(in_closed_channels))
        values = np.full(n, 4.6)
        values[closed[gate.name]] = -4.6
        gate.log_alpha.assign(values)
    figures = tfsparse.summary(net, print_fn=lambda *_: None)
    units = figures["units_kept"]
    assert paper.flops_fraction(model, units) == pytest.approx(figures["total"]["flops_fraction"])


def test_fingerprint_comparison_names_each_configuration_that_changed():
    from bench import fingerprint

    before = {"dense {}": [0.1, "aa"], "npn {}": [0.2, "bb"]}
    lines, same = fingerprint.compare(before, dict(before))
    assert same and all(line.startswith("same") for line in lines)
    lines, same = fingerprint.compare(before, {**before, "npn {}": [0.2, "cc"]})
    assert not same and [line.split()[0] for line in lines] == ["same", "DIFFERENT"]


def _arch_rows():
    def row(label, error, fraction):
        return {
            "model": "resnet20",
            "seed": 0,
            "label": label,
            "error": error,
            "flops": int(1000 * fraction),
            "flops_fraction": fraction,
            "params": 10,
            "size_bytes": 2048,
            "latency_ms": 1.0,
            "speedup": 1 / fraction,
            "parity_ok": True,
            "epochs": 6 if label == "dense" else 9,
        }

    return [
        row("dense", 8.0, 1.0),
        row("hard_concrete", 9.0, 0.3),
        row("npn", 8.5, 0.31),
        row("td-unit", 8.2, 0.9),  # better error, but far from the budget
        row("dense-long", 7.5, 1.0),  # a reference, not a method
    ]


def _torch_record(data):
    """A Torch-Pruning record of ResNet-20, seed 0, matched to NPN's cost."""
    return {
        "tfsparse_model": "resnet20",
        "seed": 0,
        "data": data,
        "method": "magnitude",
        "matched": "npn",
        "error": 0.1,
        "dense_error": 0.08,
        "macs": 300,
        "dense_macs": 1000,
        "params": 5,
        "latency_ms": 0.5,
        "speedup": 2.0,
        "epochs": 6,
        "finetune_epochs": 3,
    }


def test_the_arch_benchmark_matches_torch_pruning_to_its_best_method_once(tmp_path, monkeypatch):
    """Torch-Pruning is aimed at the multiply-adds of the lowest-error method
    within a third of dense, and a record already made is read back instead of
    run again (no torch here)."""
    from bench import arch

    measured = _arch_rows()
    assert arch.best(measured)["label"] == "npn"
    done = _torch_record("f.npz")
    (tmp_path / "arch_torch.jsonl").write_text(json.dumps(done) + "\n")
    monkeypatch.setattr(arch, "TORCH_PYTHON", str(tmp_path / "no-python"))
    assert arch.torch_record("resnet20", 0, measured, str(tmp_path), "x/f.npz", 1, 1) == done
    with pytest.raises(SystemExit, match="make torch-env"):
        arch.torch_record("resnet20", 1, measured, str(tmp_path), "x/f.npz", 1, 1)
    table = arch.to_markdown(measured, [done])
    assert "| resnet20 | npn | 0 | 9 | 8.50 | 0.310 (310) |" in table
    assert (
        "Torch-Pruning (magnitude, at npn's multiply-adds; dense 8.00 %) | 0 | 6 + 3 | "
        "10.00 | 0.300" in table
    )
    path = arch.plot("resnet20", measured, [done], str(tmp_path / "arch.png"))
    assert (tmp_path / "arch.png").stat().st_size > 0 and path.endswith("arch.png")


def test_torch_pruning_runs_once_per_row_it_is_aimed_at(tmp_path, monkeypatch):
    """`--torch-at` aims Torch-Pruning at another row's multiply-adds: the
    best method's record does not stand in for it, a record matched to that
    row does, and a label with no row is refused by name."""
    from bench import arch

    measured = _arch_rows()
    at_npn = _torch_record("f.npz")
    at_hc = {**at_npn, "matched": "hard_concrete", "error": 0.2}
    (tmp_path / "arch_torch.jsonl").write_text(json.dumps(at_npn) + "\n")
    monkeypatch.setattr(arch, "TORCH_PYTHON", str(tmp_path / "no-python"))
    call = ("resnet20", 0, measured, str(tmp_path), "x/f.npz", 1, 1)
    with pytest.raises(SystemExit, match="make torch-env"):
        arch.torch_record(*call, at="hard_concrete")
    with open(tmp_path / "arch_torch.jsonl", "a") as f:
        f.write(json.dumps(at_hc) + "\n")
    assert arch.torch_record(*call, at="hard_concrete") == at_hc
    assert arch.torch_record(*call) == at_npn
    with pytest.raises(ValueError, match="--torch-at 'npn@0.2' names no measured row"):
        arch.torch_record(*call, at="npn@0.2")


def test_torch_pruning_trains_on_the_threads_asked_for(tmp_path, monkeypatch, capsys):
    """`--torch-threads` reaches Torch-Pruning's process (beside a TensorFlow
    run, every core would oversubscribe the machine); without it the process
    keeps its own default; a count below 1 is refused by name."""
    from bench import arch

    commands = []

    def fake_run(command, check):
        commands.append(command)
        out = command[command.index("--out") + 1]
        with open(out, "w") as f:
            f.write(json.dumps({**_torch_record("f.npz"), "train_labels_sha256": "d"}) + "\n")

    monkeypatch.setattr(arch, "TORCH_PYTHON", __file__)  # exists; never run
    monkeypatch.setattr(arch.subprocess, "run", fake_run)
    monkeypatch.setattr(arch, "train_labels_digest", lambda dataset, seed: "d")
    measured = _arch_rows()
    arch.torch_record("resnet20", 0, measured, str(tmp_path), "x/f.npz", 1, 1, threads=1)
    arch.torch_record("resnet20", 1, measured, str(tmp_path), "x/f.npz", 1, 1)
    assert commands[0][-2:] == ["--threads", "1"]
    assert "--threads" not in commands[1]
    with pytest.raises(SystemExit):
        arch.main(["--torch-threads", "0"])
    assert "--torch-threads: must be a positive integer; got 0" in capsys.readouterr().err


def test_the_arch_table_renders_from_the_rows_measured_before(tmp_path):
    """`--render-only` writes the table, plots and page block from the
    recorded rows without training or timing anything."""
    from bench import arch

    measured = _arch_rows()
    torch_done = _torch_record("fashion-mnist.npz")
    (tmp_path / "arch_measured.jsonl").write_text("".join(json.dumps(r) + "\n" for r in measured))
    (tmp_path / "arch_torch.jsonl").write_text(json.dumps(torch_done) + "\n")
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{arch.PAGE_START}\nold\n{arch.PAGE_END}\nend\n")
    arch.main(["--render-only", "--records", str(tmp_path), "--page", str(page)])
    text = page.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("end\n")
    assert "| resnet20 | dense-long | 0 | 9 | 7.50 |" in text
    assert "Torch-Pruning (magnitude, at npn's multiply-adds" in text
    assert (tmp_path / "arch_resnet20.png").stat().st_size > 0


def test_the_arch_benchmark_measures_what_is_recorded_without_training(monkeypatch):
    """`--no-train` measures the runs a partial suite holds and trains
    nothing; without it the missing runs are trained first."""
    import argparse

    from bench import arch

    trained = []
    monkeypatch.setattr(arch.suites, "run_suite", lambda *a, **k: trained.append(a[2]))
    monkeypatch.setattr(arch, "rows", lambda model, *rest: _arch_rows())
    args = argparse.Namespace(models=["resnet20"], seeds=[0], quick=False, no_torch=True)
    stale = {**_arch_rows()[0], "error": 99.0}
    for no_train, expected in ((True, []), (False, [["resnet20"]])):
        trained.clear()
        args.no_train = no_train
        measured = arch.measure(args, "records", "data.npz", 1.0, 5, [stale])
        assert trained == expected
        assert [r["label"] for r in measured] == [r["label"] for r in _arch_rows()]
        assert all(r["error"] != 99.0 for r in measured)


def test_the_arch_benchmark_keeps_the_rows_of_models_it_cannot_measure_again(monkeypatch):
    """Measuring a seed where only some runs' saved models are present (a
    new checkout, one new run) replaces those rows and keeps the others."""
    import argparse

    from bench import arch

    earlier = _arch_rows()
    new = {**earlier[2], "label": "npn@0.2", "error": 7.0}
    monkeypatch.setattr(arch, "rows", lambda *a: [new, {**earlier[1], "error": 9.5}])
    args = argparse.Namespace(models=["resnet20"], seeds=[0], no_train=True, no_torch=True)
    measured = arch.measure(args, "records", "data.npz", 1.0, 5, earlier)
    by_label = {r["label"]: r for r in measured}
    assert sorted(by_label) == sorted([r["label"] for r in earlier] + ["npn@0.2"])
    assert len(measured) == len(earlier) + 1
    assert by_label["hard_concrete"]["error"] == 9.5 and by_label["npn@0.2"]["error"] == 7.0
    assert by_label["npn"] == earlier[2]


def test_the_arch_rows_of_a_seed_without_its_dense_run_take_the_recorded_dense_count(
    tmp_path, monkeypatch
):
    """A seed whose dense network was not trained is measured against an
    untrained reference (no dense row); its fractions use the dense count
    every run records."""
    from bench import arch

    def record(label, flops_total=1000):
        return {
            "config": {"model": "mobilenet_v2_050", "seed": 1, "label": label},
            "test_error": 0.12,
            "epochs": 5,
            "sparsity": {"total": {"flops_total": flops_total}},
        }

    (tmp_path / "arch.jsonl").write_text(json.dumps(record("npn")) + "\n")
    measured = [
        {
            "label": "npn",
            "flops": 300,
            "params": 10,
            "size_bytes": 40,
            "latency_ms": 0.2,
            "speedup": 2.0,
            "parity_ok": True,
        }
    ]
    monkeypatch.setattr(arch.export_bench, "measure_seed", lambda *a, **k: measured)
    (row,) = arch.rows("mobilenet_v2_050", 1, str(tmp_path), 5, "data.npz")
    assert row["flops_fraction"] == 0.3 and row["speedup"] == 2.0 and row["error"] == 12.0
    # Runs of one network that disagree on the dense count are an error.
    with open(tmp_path / "arch.jsonl", "a") as f:
        f.write(json.dumps(record("hard_concrete", flops_total=999)) + "\n")
    with pytest.raises(ValueError, match=r"dense counts \[999, 1000\]"):
        arch.rows("mobilenet_v2_050", 1, str(tmp_path), 5, "data.npz")


def test_the_budget_table_sets_runs_at_a_lambda_rows_flops_beside_it(tmp_path):
    """Budget runs whose target is a λ row's FLOPs fraction are shown beside
    it with their spread over seeds; without such runs the curve is
    interpolated, and a λ row outside the targets' range says so."""
    from bench import budget_table

    def record(method, seed, flops, error, target=None, label=None):
        options = {"target_flops": target} if target else {}
        return {
            "model": "lenet_300_100",
            "method": method,
            "config": {"label": label or f"{method}-t{target}", "options": options},
            "args": {"seed": seed},
            "sparsity": {"total": {"flops_fraction": flops}},
            "test_error": error / 100,
        }

    lambda_rows = [
        record("npn", 0, 0.0950, 4.5, label="npn-prune"),
        record("npn", 1, 0.0966, 4.7, label="npn-prune"),
    ]
    budgets = [
        record("npn", 0, 0.05, 6.0, target=0.05),
        record("npn", 0, 0.1, 5.0, target=0.1),
        record("npn", 0, 0.0958, 4.6, target=0.0958),
        record("npn", 1, 0.0958, 5.0, target=0.0958),
        record("hard_concrete", 0, 0.1, 4.0, target=0.1),
        record("hard_concrete", 0, 0.25, 3.5, target=0.25),
    ]
    for name, records in (("l0_npn.jsonl", lambda_rows), ("budgets.jsonl", budgets)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    curves = budget_table.budget_runs(str(tmp_path))
    lambdas = budget_table.lambda_rows(str(tmp_path), ["lenet_300_100"])
    table = budget_table.to_markdown(curves, lambdas)
    beside = "| 0.0958 | 4.60 ± 0.14 (2 seeds) | 4.80 ± 0.28 (2 seeds) |"
    assert f"| lenet_300_100 | npn-prune {beside}" in table
    assert "| npn-prune | 0.0958 | 0.0958 | +0.0 % | 4.80 ± 0.28 (2 seeds) |" in table
    curve = curves["lenet_300_100", "hard_concrete"]
    interpolated = 3.5 + (4.0 - 3.5) * math.log(0.25 / 0.158) / math.log(2.5)
    assert budget_table.at_lambda(curve, 0.158) == f"{interpolated:.2f} (interpolated)"
    assert budget_table.at_lambda(curve, 0.5) == "outside the targets' range"


def test_the_vit_table_keeps_rows_whose_saved_models_are_elsewhere():
    from bench import vit_fashion

    def row(label, seed, speedup):
        return {"label": label, "seed": seed, "speedup": speedup}

    before = [row("dense", 0, 1.0), row("hard_concrete", 0, 1.9), row("npn", 0, 2.5)]
    now = [row("bb+dbb", 0, 1.6), row("npn", 0, 2.4), row("dense", 1, 1.0)]
    table = vit_fashion.merged(before, now)
    assert [(r["label"], r["seed"], r["speedup"]) for r in table] == [
        ("dense", 0, 1.0),
        ("hard_concrete", 0, 1.9),
        ("npn", 0, 2.4),
        ("bb+dbb", 0, 1.6),
        ("dense", 1, 1.0),
    ]


def test_dbb_factor_leaves_bbs_mask_alone_on_the_weights():
    import keras

    from bench import dbb_factor
    from tfsparse.gates.dependent_beta_bernoulli import DependentBetaBernoulliGate

    gate = DependentBetaBernoulliGate(freeze_bb=False, seed=0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, gate(inputs))
    gate.gamma.assign(np.linspace(-2, 2, 6).astype("float32"))
    gate.beta.assign(np.full(6, 0.3, "float32"))
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    assert not np.allclose(gate.dynamic_mask(x), 1.0)
    static = np.asarray(gate.mask())
    static = np.where(static > float(gate.threshold), static, 0.0)
    dbb_factor.without_factor(model)
    np.testing.assert_allclose(gate.dynamic_mask(x), 1.0)
    np.testing.assert_allclose(model.predict(x, verbose=0), x * static, rtol=1e-6)
    with pytest.raises(ValueError, match="DependentBetaBernoulliGate"):
        dbb_factor.without_factor(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


def test_dbb_control_holds_the_factor_at_one_and_out_of_training():
    import keras

    from bench import dbb_control
    from tfsparse.gates.dependent_beta_bernoulli import DependentBetaBernoulliGate

    gate = DependentBetaBernoulliGate(freeze_bb=False, seed=0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, gate(inputs))
    gate.gamma.assign(np.linspace(-2, 2, 6).astype("float32"))
    dbb_control.hold_factor_at_one(model)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(gate.dynamic_mask(x), 1.0)
    held = {id(v) for v in (gate.gamma, gate.beta, gate.sigma_raw)}
    trained = {id(v) for v in model.trainable_variables}
    assert not held & trained
    assert {id(gate.a_raw), id(gate.b_raw)} <= trained
    assert np.max(gate.sigma()) < 1e-4


def test_dbb_control_can_start_the_shift_where_the_authors_code_does():
    import keras

    from bench import dbb_control
    from tfsparse.gates.dependent_beta_bernoulli import DependentBetaBernoulliGate

    gate = DependentBetaBernoulliGate(freeze_bb=False, seed=0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, gate(inputs))
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    assert np.min(gate.dynamic_mask(x)) < 1.0  # β = 1: below-average inputs close
    dbb_control.start_beta_at_ten(model)
    np.testing.assert_array_equal(gate.beta.numpy(), 10.0)
    np.testing.assert_allclose(gate.dynamic_mask(x), 1.0)  # the phase starts as BB
    assert {id(gate.beta), id(gate.gamma)} <= {id(v) for v in model.trainable_variables}


def test_dbb_control_without_noise_fixes_sigma_and_trains_the_rest():
    import keras

    from bench import dbb_control
    from tfsparse.gates.dependent_beta_bernoulli import DependentBetaBernoulliGate

    gate = DependentBetaBernoulliGate(freeze_bb=False, seed=0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, gate(inputs))
    dbb_control.without_noise(model)
    trained = {id(v) for v in model.trainable_variables}
    assert id(gate.sigma_raw) not in trained
    assert {id(gate.beta), id(gate.gamma)} <= trained
    assert np.max(gate.sigma()) < 1e-4
