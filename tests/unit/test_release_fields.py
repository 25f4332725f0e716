"""What schema 3 added to the manifest: the overall verdict (and the gate's, judged the same way), timestamps,
the host CPU, and latency marked noisy when its spread is too large to trust."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import numpy as np

from compressor.evaluate.latency import NOISY_P90_OVER_MEDIAN, summarize
from compressor.hostcpu import host_record
from compressor.release.gate import junit_xml, markdown_summary, verdict_line
from compressor.release.manifest import release_verdict, utc_now

PASS = {"value": 1.0, "limit": 2.0, "bound": "max", "ok": True}
FAIL = {"value": 3.0, "limit": 2.0, "bound": "max", "ok": False}
PENDING = {"value": None, "limit": 2.0, "bound": "max", "ok": None, "pending": "timed on the device"}


def test_the_verdict_is_fail_over_pending_over_pass():
    assert release_verdict({}) == "pass"  # no budgets: nothing failed
    assert release_verdict({"size_mb": PASS, "psnr": PASS}) == "pass"
    assert release_verdict({"size_mb": PASS, "latency_ms": PENDING}) == "pending"
    assert release_verdict({"size_mb": FAIL, "latency_ms": PENDING}) == "fail"


def test_timestamps_are_iso_8601_utc():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())


def test_a_timing_whose_p90_is_over_twice_its_median_is_noisy():
    quiet = summarize(np.array([1.0] * 8 + [1.2, 1.3]), warmup=2)
    busy = summarize(np.array([0.34] * 8 + [4.61, 4.61]), warmup=2)  # the p90 4.61 ms vs median 0.34 ms
    assert quiet["noisy"] is False and "noisy_reason" not in quiet
    assert busy["noisy"] is True and busy["p90_ms"] > NOISY_P90_OVER_MEDIAN * busy["median_ms"]
    assert "the median 0.34 ms" in busy["noisy_reason"]
    assert quiet["p10_ms"] <= quiet["median_ms"] <= quiet["p90_ms"]


def test_the_host_record_names_the_cpu_its_kernel_flags_and_cores(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n"
                       "flags\t\t: fpu sse4_2 avx avx2 avx512f avx512_vnni amx_int8 ht\n")
    host = host_record(cpuinfo)
    assert host["cpu_model"] == "Test CPU 9000"
    assert host["cpu_flags"] == ["sse4_2", "avx", "avx2", "avx512f", "avx512_vnni", "amx_int8"]  # no fpu, ht
    assert host["cores"] >= host["cores_usable"] >= 1
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm sve\n")
    assert host_record(arm)["cpu_flags"] == ["asimd", "asimddp", "i8mm", "sve"]


def test_the_gate_states_the_verdict_and_where_it_differs_from_the_runs():
    manifest = {"verdict": "pass", "config": {"target": {"name": "cpu-x86"}}, "model": {"card": {"name": "m"}},
                "config_sha256": "ab" * 32}
    checks = {"size_mb": FAIL}
    assert verdict_line(manifest, checks) == "verdict: fail (the run recorded pass, under its own budgets)"
    assert verdict_line({}, checks) == "verdict: fail"  # a schema 2 manifest records none
    summary = markdown_summary(manifest, checks)
    assert summary.startswith("### compressor gate: FAILED") and "verdict: fail" in summary
    suite = ElementTree.fromstring(junit_xml(checks, "m").split("?>", 1)[1])
    assert suite.find("properties/property[@name='verdict']").get("value") == "fail"
