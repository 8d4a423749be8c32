"""benchmarks/five_seeds.py: the five-seed table from results.jsonl files (no training)."""

import json

from benchmarks import five_seeds


def _write(path, records):
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_table_means_over_the_finished_seeds(tmp_path):
    auto = [
        {
            "status": "ok",
            "variants": [f"{five_seeds.DEFAULT}@0.001"],
            "seed": s,
            "final_test_accuracy": a,
        }
        for s, a in enumerate([0.60, 0.62, 0.64, 0.66, 0.68])
    ]
    fixed = [
        {
            "status": "ok",
            "variants": ["budget:wsd@1", "other"],
            "seed": 0,
            "final_test_accuracy": 0.7,
        },
        {"status": "ok", "variants": ["budget:wsd@1"], "seed": 1, "final_test_accuracy": 0.6},
        # Unfinished runs do not count.
        {"status": "failed", "variants": ["budget:wsd@1"], "seed": 2, "final_test_accuracy": 0.0},
    ]
    _write(tmp_path / "compare_cpu_value", auto)
    _write(tmp_path / "compare_cpu", fixed)
    frame = five_seeds.table(tmp_path)
    row = frame.loc["default from 0.001"]
    assert row["n"] == 5
    # 60, 62, ..., 68: mean 64, sample std sqrt(40 / 4) = 3.16.
    assert row["mean ± std"] == "64.0 ± 3.2"
    wsd = frame.loc["budget:wsd@1"]
    assert wsd["n"] == 2 and wsd["seed 2"] == "–" and wsd["seed 0"] == "70.00"
    assert frame.loc["main:prodigy"]["n"] == 0 and frame.loc["main:prodigy"]["mean ± std"] == "–"
    assert frame.loc["default from 1"]["n"] == 0
