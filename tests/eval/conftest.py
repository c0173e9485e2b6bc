"""Fixtures of the eval tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def no_report_figures(monkeypatch):
    """engine.evaluate draws its report's figures (seconds of matplotlib) after every file a test
    reads is written; tests that read only metrics and predictions skip them. That evaluate draws
    its report is test_eval_cli.py's test_evaluate_reproduces_the_training_test_metrics, the
    figures themselves test_eval_report.py."""
    from engine.output import run_report
    drawn = []
    monkeypatch.setattr(run_report, "build_or_warn", lambda run_dir: drawn.append(run_dir) or True)
    return drawn
