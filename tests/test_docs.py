"""The documentation tells the truth about the code, and a reader can follow every reference in it.

What a reader checks by hand, checked here so the pages cannot fall behind the code: every
setting in docs/configuration.md's table with the default the code has (and no setting that is
gone), every relative link and anchor resolving, every repository path and test named existing,
every metric and alert named being one the gateway and deploy/ really have, the README short
enough to guide, and the product spoken of by what it does, never by tracker numbers.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from gateway.core.settings import Settings
from tests.support import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(
    [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "bench" / "README.md", ROOT / "deploy/k8s/README.md"]
    + list(DOCS.glob("*.md"))
)
CONFIGURATION = DOCS / "configuration.md"
OPERATIONS = DOCS / "operations.md"
README_MAX_LINES = 300
# Settings the gateway's processes read that are not its own: uvicorn's proxy trust.
FOREIGN_SETTINGS = {"FORWARDED_ALLOW_IPS"}
# Files the benchmark writes; git ignores them, a reader finds them after a run.
GENERATED = ("bench/results/",)
# Look like paths, are not: kubectl's short name for the Deployment (`kubectl exec deploy/...`).
NOT_PATHS = {"deploy/image-gateway"}


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _without_code_blocks(text: str) -> str:
    """The page with fenced code blocks blanked (their lines kept, so line numbers stay true)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


# -- the settings table ---------------------------------------------------------------------------


def _settings_table() -> dict[str, str]:
    """Variable -> its default cell, from the one table of docs/configuration.md."""
    rows: dict[str, str] = {}
    for line in CONFIGURATION.read_text().splitlines():
        match = re.match(r"^\| `([A-Z_]+)` \| (.+?) \| (.+) \|$", line)
        if match:
            name, default, meaning = match.groups()
            assert name not in rows, f"{name} has two rows"
            assert meaning.strip(), f"{name} has no meaning"
            rows[name] = default
    return rows


def _documented_default(cell: str) -> object:
    """``unset`` for None, else the first value in backticks."""
    if cell.startswith("unset"):
        return None
    match = re.match(r"^`([^`]*)`", cell)
    assert match, f"a default cell starts with `value` or 'unset': {cell!r}"
    return match.group(1)


def test_the_configuration_page_lists_every_setting_once_and_nothing_else() -> None:
    settings = {"GATEWAY_" + name.upper() for name in Settings.model_fields}
    documented = set(_settings_table())
    assert settings - documented == set(), "settings missing from docs/configuration.md"
    gone = documented - settings - FOREIGN_SETTINGS
    assert gone == set(), "docs/configuration.md lists settings that are gone"


def test_the_configuration_page_gives_each_setting_the_default_the_code_has() -> None:
    table = _settings_table()
    wrong = {}
    for name, field in Settings.model_fields.items():
        documented = _documented_default(table["GATEWAY_" + name.upper()])
        if documented is None or field.default is None:
            same = documented is None and field.default is None
        else:
            assert field.annotation is not None
            same = TypeAdapter(field.annotation).validate_python(documented) == field.default
        if not same:
            wrong[name] = (documented, field.default)
    assert not wrong, f"documented default vs the code's: {wrong}"


def _named_but_unknown(pattern: str, known: set[str]) -> list[tuple[str, str]]:
    """(page, name) for every name matching ``pattern`` on a page that is not in ``known``."""
    found = {(_name(page), name) for page in PAGES for name in re.findall(pattern, page.read_text())}
    return sorted((page, name) for page, name in found if name not in known)


# Read from the environment by the tests' fault hook (gateway/call/injected_fault.py), not a setting:
# docs/architecture.md names it so a reader knows it exists and does nothing unless set.
TEST_HOOKS = {"GATEWAY_TEST_FAULT_MARKER"}


def test_the_settings_the_docs_name_exist() -> None:
    settings = {"GATEWAY_" + name.upper() for name in Settings.model_fields} | TEST_HOOKS
    unknown = _named_but_unknown(r"\bGATEWAY_[A-Z_]*[A-Z]\b", settings)
    assert not unknown, f"settings the code does not have: {unknown}"


# -- links and references -------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@cache
def _anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _without_code_blocks(page.read_text()).splitlines():
        match = re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(anchors)


def _links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", _without_code_blocks(page.read_text()))
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def test_the_pages_link_only_to_files_and_anchors_that_exist() -> None:
    broken = []
    for page in PAGES:
        for target in _links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
                continue
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            if not destination.exists():
                broken.append((_name(page), target, "no such file"))
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                broken.append((_name(page), target, "no such heading"))
    assert not broken, broken


def test_the_link_checker_knows_githubs_anchors() -> None:
    assert _slug("For finance: the ledger and reports") == "for-finance-the-ledger-and-reports"
    assert _slug("`GATEWAY_DRAIN_S` and SIGTERM") == "gateway_drain_s-and-sigterm"
    assert _slug("Redis URLs") == "redis-urls"


_PATH = re.compile(r"(?<![\w/.$-])((?:gateway|tests|deploy|bench|scripts|docs)/[\w./-]*[\w/])(::\w+)?")


def test_the_repository_paths_and_tests_the_pages_name_exist() -> None:
    missing = []
    for page in PAGES:
        for path, test in _PATH.findall(page.read_text()):
            if path.startswith(GENERATED) or path in NOT_PATHS:
                continue
            if not (ROOT / path).exists():
                missing.append((_name(page), path))
            elif test and not re.search(rf"^(async )?def {test[2:]}\(", (ROOT / path).read_text(), re.M):
                missing.append((_name(page), path + test))
    assert not missing, missing


# -- metrics and alerts ---------------------------------------------------------------------------


def _exported() -> dict[str, set[str]]:
    """Metric family -> the series names it shows, from the gateway's registry."""
    from gateway.core.metrics import REGISTRY

    families: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        families[family.name] = {family.name + s for s in suffixes} | {family.name}
    return families


def test_the_operations_page_names_every_metric_the_gateway_exports() -> None:
    text = OPERATIONS.read_text()
    missing = [name for name in _exported() if not re.search(rf"\b{name}(_total)?\b", text)]
    assert not missing, f"docs/operations.md does not describe: {missing}"


def test_the_metrics_the_pages_name_exist() -> None:
    unknown = _named_but_unknown(r"\bgateway_[a-z_]*[a-z]\b", set().union(*_exported().values()))
    assert not unknown, f"metrics the gateway does not export: {unknown}"


def _alerts() -> set[str]:
    rules: Any = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}


def test_the_alerts_the_pages_name_exist_and_operations_names_them_all() -> None:
    alerts = _alerts()
    unknown = _named_but_unknown(r"\bImageGateway\w+", alerts)
    assert not unknown, f"alerts deploy/prometheus/alerts.yml lacks: {unknown}"
    undescribed = alerts - set(re.findall(r"\bImageGateway\w+", OPERATIONS.read_text()))
    assert not undescribed, f"docs/operations.md does not describe: {sorted(undescribed)}"


# -- the README, and how the product is spoken of ---------------------------------------------------


def test_the_readme_guides_in_at_most_300_lines_and_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)
    top = "\n".join(lines[:10])
    assert "make run" in top and "make test" in top


def _our_text_files() -> list[Path]:
    code = [p for p in (ROOT / "gateway").rglob("*") if p.suffix in (".py", ".lua", ".js", ".html", ".css")]
    return PAGES + code + sorted((ROOT / "tests").rglob("*.py"))


@pytest.mark.parametrize("pattern", [r"\bissues? ?#?\d+", r"\b\d+\.\d+ block\b"])
def test_the_code_and_docs_speak_of_the_product_not_of_tracker_numbers(pattern: str) -> None:
    found = [
        (_name(path), match.group(0))
        for path in _our_text_files()
        for match in re.finditer(pattern, path.read_text(errors="replace"), re.I)
    ]
    found += [(_name(path), path.name) for path in _our_text_files() if re.search(r"issue\d", path.name)]
    assert not found, found
