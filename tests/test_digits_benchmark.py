"""A fast smoke test of benchmarks/digits.py: plan, run and report on a tiny plan."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sklearn")

from benchmarks import digits  # noqa: E402


def test_digits_quick_run_and_report(tmp_path, capsys):
    assert digits.main(["plan"]) == 0
    names = capsys.readouterr().out
    for needed in (
        "adam-constant",
        "adam-cosine",
        "auto-seed",
        "auto-armijo+search+wsd",
        "auto-parabola+search+wsd",
        "prodigy",
        "auto-default",
        "momentum-auto-default",
    ):
        assert needed in names
    # Two of the quick plan's rows, two seeds: the options that re-run chosen rows with more seeds.
    argv = ["--quick", "--seeds", "2", "--methods", "adam-constant,auto-default"]
    assert digits.main([*argv, "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    machine = json.loads(lines[0])["machine"]
    assert machine["versions"]["jax"] and machine["versions"]["scikit-learn"]
    assert machine["seeds"] == [0, 1]
    runs = [json.loads(x) for x in lines[1:]]
    assert {r["method"] for r in runs} == {"adam-constant", "auto-default"}
    assert {r["seed"] for r in runs} == {0, 1}
    auto = [r for r in runs if r["method"].startswith("auto")]
    assert all(r["decision_per_probe"][0] == 8 for r in auto)  # the first probe searched
    report = (tmp_path / "report.md").read_text()
    assert "Test accuracy" in report and "Target" in report


def test_digits_refuses_unknown_rows_and_no_seeds(tmp_path):
    with pytest.raises(ValueError, match="methods: \\[.nope.\\] are not rows of the plan"):
        digits.run_all(tmp_path, quick=True, methods=("adam-constant", "nope"))
    assert not (tmp_path / "runs.jsonl").exists()
    with pytest.raises(SystemExit):
        digits.main(["--seeds", "0", "--out", str(tmp_path)])
