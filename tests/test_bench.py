import json

from bench import report, run


def test_run_config_appends_records_and_report(tmp_path):
    out = tmp_path / "r.jsonl"
    for seed in (0, 1):
        run.run_config(
            "lenet_300_100", "dense", "digits", seed, 1, out,
            out=str(tmp_path / "runs"), batch_size=256, verbose=0,
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
        return {"dataset": "d", "model": "m", "method": method, "test_error": err,
                "params": 10, "time_per_epoch": [1.0, 3.0]}

    rows = report.summarize([rec("a", 0.01), rec("a", 0.03), rec("b", 0.05)])
    assert [(r["method"], r["runs"]) for r in rows] == [("a", 2), ("b", 1)]
    assert abs(rows[0]["error_mean"] - 2.0) < 1e-9
    assert abs(rows[0]["error_std"] - 2 ** 0.5) < 1e-9
    assert rows[1]["error_std"] == 0.0 and rows[0]["time_per_epoch"] == 2.0
