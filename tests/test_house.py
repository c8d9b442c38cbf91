"""The house rules a reader relies on: small modules in packages, and a map that names every package.

`make lint` checks the layering between the packages (import-linter, pyproject.toml); these check
what it does not: module size, what sits directly in ``gateway/``, and that docs/architecture.md
describes every package that exists, so the map cannot silently fall behind the code.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GATEWAY = REPO / "gateway"
MAX_MODULE_LINES = 450
MAX_TOP_LEVEL_MODULES = 8


def _modules() -> list[Path]:
    return sorted(p for p in GATEWAY.rglob("*.py") if "__pycache__" not in p.parts)


def _packages() -> list[str]:
    inits = (p for p in GATEWAY.rglob("__init__.py") if p.parent != GATEWAY)
    return sorted(p.parent.relative_to(GATEWAY).as_posix() for p in inits)


def test_no_module_runs_over_450_lines() -> None:
    long = {
        p.relative_to(REPO).as_posix(): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these by what changes together: {long}"


def test_only_a_few_modules_that_belong_to_the_whole_sit_directly_in_gateway() -> None:
    top = sorted(p.name for p in GATEWAY.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_the_architecture_page_describes_every_package() -> None:
    page = (REPO / "docs" / "architecture.md").read_text()
    missing = [name for name in _packages() if f"`{name}/`" not in page]
    assert not missing, f"docs/architecture.md does not describe: {missing}"
    # and names no package that is gone
    named = set(re.findall(r"`([a-z0-9_]+(?:/[a-z0-9_]+)*)/`", page))
    gone = sorted(n for n in named if not (GATEWAY / n).is_dir() and n.split("/")[0] in _top_packages())
    assert not gone, f"docs/architecture.md names packages that no longer exist: {gone}"


def _top_packages() -> set[str]:
    return {name.split("/")[0] for name in _packages()}


def test_the_layering_contract_names_every_top_level_package() -> None:
    """A package left out of the layers contract would be free to import anything."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c for c in config["contracts"] if c["type"] == "layers" and "containers" not in c]
    layered = {m.strip().removeprefix("gateway.") for layer in layers["layers"] for m in layer.split("|")}
    standalone = {"simulator"}  # its own forbidden contracts keep it apart
    modules = {p.stem for p in GATEWAY.glob("*.py")} - {"__init__", "__main__"}
    unlayered = (_top_packages() | modules) - layered - standalone
    assert not unlayered, sorted(unlayered)


def test_every_metric_the_gateway_exports_is_documented() -> None:
    """Ops read the list of metrics, not the code: each family of /metrics is named in the README
    or a page of docs/, as it appears on the page (counters with ``_total``)."""
    from gateway.core.metrics import REGISTRY

    text = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    names = {
        f"{m.name}_total" if m.type == "counter" else m.name
        for m in REGISTRY.collect()  # type: ignore[no-untyped-call]
    }
    missing = sorted(name for name in names if f"`{name}" not in text)
    assert not missing, f"exported but not documented: {missing}"
