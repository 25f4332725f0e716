"""`compressor gate`: re-check a finished release against budgets from its manifest alone.

Nothing is recomputed: the values come from the manifest `compressor run` wrote, the budgets from the
profile recorded in it, overridden by `--set budgets.<name>.<field>=...`. The verdict can be written
as JUnit XML (one test case per budget; CI systems show failures natively) and as a Markdown summary
(e.g. appended to GitHub's $GITHUB_STEP_SUMMARY). The overall verdict (pass / fail / pending) is the same
function of the checks as the `verdict` `compressor run` records (schema 3); manifests without one (schema 2)
are judged the same way, and where the gate's overrides change the recorded verdict both are said.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from pydantic import ValidationError

from compressor.config import assign_override, parse_set_value
from compressor.errors import UsageError, validation_summary
from compressor.release.budgets import BudgetError, Budgets, check_budgets, failures, limit_text, value_text
from compressor.release.manifest import read_manifest, release_verdict
from compressor.release.report import budget_table


def gate(manifest_path: Path, sets: list[str] = ()) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The manifest and each budget's {value, limit, ok}, under the recorded budgets plus `sets`."""
    manifest = read_manifest(manifest_path)
    if manifest.get("status") != "complete":
        raise BudgetError(f"{manifest_path}: the release is not complete (status {manifest.get('status')}); rerun compressor run")
    budgets = budgets_with_overrides(manifest.get("config", {}).get("profile", {}).get("budgets", {}), sets)
    if not budgets.named():
        raise UsageError(f"{manifest_path}: no budgets to check; the profile sets none, add some with --set budgets.size_mb.max=...")
    return manifest, check_budgets(manifest, budgets)


def budgets_with_overrides(recorded: dict[str, Any], sets: list[str]) -> Budgets:
    """The recorded budgets with `--set budgets.<name>[.<field>]=value` applied by the same rules as `run --set`."""
    tree = {"profile": {"budgets": {name: recorded.get(name) for name in Budgets.model_fields}}}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().removeprefix("profile.").startswith("budgets."):
            raise UsageError(f"--set '{item}': gate only takes budgets, e.g. --set budgets.size_mb.max=1.5")
        assign_override(tree, key.strip(), parse_set_value(item, raw))
    try:
        return Budgets.model_validate(tree["profile"]["budgets"])
    except ValidationError as exc:
        raise UsageError(f"--set: invalid budget: {validation_summary(exc)}") from exc


def junit_xml(checks: dict[str, dict[str, Any]], name: str) -> str:
    """One <testcase> per budget; a failed budget carries a <failure> with value and limit."""
    failed = failures(checks)
    suite = ElementTree.Element("testsuite", name=f"compressor budgets: {name}", tests=str(len(checks)), failures=str(len(failed)))
    properties = ElementTree.SubElement(suite, "properties")
    ElementTree.SubElement(properties, "property", name="verdict", value=release_verdict(checks))
    for budget, check in checks.items():
        case = ElementTree.SubElement(suite, "testcase", classname="compressor.release.budgets", name=budget)
        case.set("time", "0")  # nothing was run: the values were measured by `compressor run`
        if check["ok"] is None:  # cannot be judged yet: CI shows it as skipped, with why
            ElementTree.SubElement(case, "skipped", message=check["pending"])
        elif not check["ok"]:
            failure = ElementTree.SubElement(case, "failure", message=describe_check(budget, check))
            failure.text = describe_check(budget, check)
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def markdown_summary(manifest: dict[str, Any], checks: dict[str, dict[str, Any]]) -> str:
    target = manifest["config"]["target"]["name"]
    headline = {"fail": "FAILED", "pending": "cannot judge every budget yet", "pass": "passed"}[release_verdict(checks)]
    lines = [
        f"### compressor gate: {headline}",
        "",
        f"{manifest['model']['card']['name']} for {target}, config `{manifest['config_sha256'][:12]}`; "
        f"{verdict_line(manifest, checks)}",
        "",
        budget_table(checks),
    ]
    return "\n".join(lines) + "\n"


def verdict_line(manifest: dict[str, Any], checks: dict[str, dict[str, Any]]) -> str:
    """'verdict: fail', and what the run recorded when the gate's budgets judge otherwise."""
    verdict = release_verdict(checks)
    recorded = manifest.get("verdict")
    differs = f" (the run recorded {recorded}, under its own budgets)" if recorded and recorded != verdict else ""
    return f"verdict: {verdict}{differs}"


def describe_check(budget: str, check: dict[str, Any]) -> str:
    why = f" ({check['pending']})" if check["ok"] is None else ""
    return f"{budget}: {value_text(check)}, limit {limit_text(check)}{why}"
