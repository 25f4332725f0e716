"""Budgets checked from a manifest alone: values, limits and verdicts, and metrics the run did not compute."""

from __future__ import annotations

import pytest

from compressor.release.budgets import BudgetError, Budgets, check_budgets, failures


def _manifest(quality=None):
    artifact = {
        "role": "final",
        "bytes": 2_500_000,
        "latency": {"batches": {"1": {"median_ms": 0.5}, "16": {"median_ms": 4.0}}},
        "quality": quality if quality is not None else {
            "psnr_db": 41.0, "ssim": 0.99,
            "fid": {"value": 12.0, "reference_model_score": 10.0, "delta": 2.0},
            "fd_surrogate": {"value": 0.5, "reference_model_score": 0.5, "delta": 0.0},
        },
    }
    return {"artifacts": {"model.onnx": artifact}}


def test_each_budget_reads_its_value_and_compares_with_its_bound():
    budgets = Budgets.model_validate({
        "size_mb": {"max": 2.0}, "latency_ms": {"max": 5.0, "batch": 16}, "fid": {"max_delta": 1.5},
        "fd_surrogate": {"max_delta": 0.1}, "psnr": {"min": 40}, "ssim": {"min": 0.995},
    })
    checks = check_budgets(_manifest(), budgets)
    assert {name: (c["value"], c["limit"], c["ok"]) for name, c in checks.items()} == {
        "size_mb": (2.5, 2.0, False), "latency_ms": (4.0, 5.0, True), "fid": (2.0, 1.5, False),
        "fd_surrogate": (0.0, 0.1, True), "psnr": (41.0, 40, True), "ssim": (0.99, 0.995, False),
    }
    assert checks["latency_ms"]["batch"] == 16
    assert failures(checks) == ["size_mb 2.5 > max 2", "fid 2 > max_delta 1.5", "ssim 0.99 < min 0.995"]


def test_a_limit_equal_to_the_value_passes():
    checks = check_budgets(_manifest(), Budgets.model_validate({"size_mb": {"max": 2.5}, "psnr": {"min": 41.0}}))
    assert all(check["ok"] for check in checks.values())


@pytest.mark.parametrize(
    "quality,budget,expected",
    [
        ({"psnr_db": 40.0, "fid": {"computed": False, "reason": "no Inception weights"}}, {"fid": {"max_delta": 1}},
         "budget fid: the release has no fid value (no Inception weights)"),
        ({"psnr_db": 40.0, "reason": "the first output has shape [4, 10]"}, {"ssim": {"min": 0.9}},
         "budget ssim: the release has no ssim value (the first output has shape [4, 10])"),
        ({}, {"psnr": {"min": 30}}, "budget psnr: the release has no psnr value"),
    ],
)
def test_a_budget_on_a_metric_not_computed_is_an_error_saying_why(quality, budget, expected):
    with pytest.raises(BudgetError) as info:
        check_budgets(_manifest(quality), Budgets.model_validate(budget))
    assert info.value.message.startswith(expected)


def test_a_release_without_the_final_artifact_is_refused():
    baseline_only = {"artifacts": {"model.fp32.onnx": {"role": "baseline", "bytes": 1}}}
    with pytest.raises(BudgetError, match="marks no artifact as final"):
        check_budgets(baseline_only, Budgets.model_validate({"size_mb": {"max": 1}}))


def test_an_int8_artifact_slower_than_its_baseline_fails_the_ratio_budget():
    manifest = _manifest()
    manifest["artifacts"]["model.onnx"]["latency_vs_fp32"] = {"batch": 16, "ratio": 1.25}
    checks = check_budgets(manifest, Budgets.model_validate({"latency_vs_baseline": {"max": 1.0}}))
    assert failures(checks) == ["latency_vs_baseline 1.25 > max 1"]
    manifest["artifacts"]["model.onnx"]["latency_vs_fp32"]["ratio"] = 0.6
    assert check_budgets(manifest, Budgets.model_validate({"latency_vs_baseline": {"max": 1.0}}))["latency_vs_baseline"]["ok"]


def test_the_ratio_budget_without_a_baseline_says_to_remove_it():
    with pytest.raises(BudgetError, match="no baseline artifact to compare with"):
        check_budgets(_manifest(), Budgets.model_validate({"latency_vs_baseline": {"max": 1.0}}))


def test_the_default_cpu_profiles_fail_an_int8_artifact_slower_than_fp32():
    from compressor.config import resolve

    for profile in ("balanced", "qat"):
        assert resolve("cpu", profile).profile.budgets.latency_vs_baseline.max == 1.0
