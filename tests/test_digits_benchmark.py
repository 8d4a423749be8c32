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
    assert digits.main(["--quick", "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    machine = json.loads(lines[0])["machine"]
    assert machine["versions"]["jax"] and machine["versions"]["scikit-learn"]
    runs = [json.loads(x) for x in lines[1:]]
    assert {r["method"] for r in runs} == {
        "adam-constant",
        "auto-armijo+search+wsd",
        "auto-default",
    }
    auto = [r for r in runs if r["method"].startswith("auto")]
    assert all(r["decision_per_probe"][0] == 8 for r in auto)  # the first probe searched
    report = (tmp_path / "report.md").read_text()
    assert "Test accuracy" in report and "Target" in report
