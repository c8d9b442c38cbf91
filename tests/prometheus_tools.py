"""Where the shipped Prometheus files are, and how the tests find promtool and prometheus."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "deploy" / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "alerts.yml"
FETCH_SCRIPT = REPO / "scripts" / "fetch-prometheus.sh"


def find_tool(name: str) -> str:
    """`name` from .tools/bin, else PATH, else fetched by scripts/fetch-prometheus.sh."""

    def lookup() -> str | None:
        local = REPO / ".tools" / "bin" / name
        if local.is_file() and os.access(local, os.X_OK):
            return str(local)
        return shutil.which(name)

    found = lookup()
    if found is None:
        run = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=300)
        found = lookup()
        if found is None:
            pytest.fail(
                f"{name} not found in .tools/bin or on PATH and {FETCH_SCRIPT.name} failed:\n"
                f"{run.stdout}{run.stderr}"
            )
    return found
