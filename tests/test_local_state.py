"""Local state as another user on the machine meets it, and the CLI run from the wrong folder."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from tests.support import TLS, free_port, run_together, wait_until


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _loose_umask() -> None:
    os.umask(0o022)  # what most shells have: the defect showed under it


def _serve(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with open(folder / "serve.log", "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--demo-key"],
            env=_clean_env(GATEWAY_PORT=str(port)),
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_loose_umask,
        )
    ready = f"http://127.0.0.1:{port}/readyz"
    wait_until(lambda: httpx.get(ready, timeout=1, verify=TLS).status_code == 200, 30, what="gateway ready")
    return process, port


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=_clean_env(),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_loose_umask,
    )


def _open_to_others(root: Path) -> list[str]:
    """Every path under ``root`` (and root) that a user other than the owner may read or enter."""
    paths = [root, *root.rglob("*")]
    return [f"{p} {stat.filemode(p.stat().st_mode)}" for p in paths if p.stat().st_mode & 0o077]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):
    """One `gateway serve --demo-key` (embedded Redis, simulator) for the module: its tests only
    read its state, and its clean exit is checked once they all have."""
    folder = tmp_path_factory.mktemp("running")
    (folder / "var").mkdir(mode=0o755)  # as an older version left it
    process, port = _serve(folder)
    yield folder, port, process
    process.terminate()
    assert process.wait(30) == 0


def test_state_directory_is_private_to_its_owner(running) -> None:
    folder, _, _ = running
    state = folder / "var"
    assert (state / "redis" / "appendonly.aof").exists() and (state / "spool").is_dir()
    assert _open_to_others(state) == []


def test_embedded_redis_refuses_a_client_without_its_password(running) -> None:
    folder, _, _ = running
    lock = (folder / "var" / "redis" / "gateway.lock").read_text()
    port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/0", lock).group(1))
    with pytest.raises(redis.exceptions.AuthenticationError):  # at once: redis-py retries it 3 s by default
        redis.Redis(port=port, retry=None).dbsize()
    password = (folder / "var" / "redis" / "password").read_text().strip()
    assert redis.Redis(port=port, password=password).ping()
    assert password not in lock
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert password not in cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue


def test_read_commands_with_no_state_say_where_they_looked_and_create_nothing(tmp_path: Path) -> None:
    commands = [
        ["report", "spend", "--start", "2026-11-01", "--end", "2026-11-30"],
        ["usage", "export", "--start", "2026-11-01", "--end", "2026-11-30"],
        ["keys", "list"],
        ["keys", "usage", "abcdefghijkl"],
        ["prices", "list"],
    ]
    results = run_together(  # side by side: none of them may write anything
        [[sys.executable, "-m", "gateway", *args] for args in commands],
        env=_clean_env(),
        cwd=tmp_path,
        preexec_fn=_loose_umask,
    )
    for args, result in zip(commands, results, strict=True):
        assert result.returncode == 1 and result.stdout == "", args
        message = result.stderr.strip()
        assert "no gateway state found" in message and str(tmp_path / "var" / "redis") in message
        assert "GATEWAY_STATE_DIR" in message and "GATEWAY_REDIS_URL" in message
        assert len(message.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_write_command_creates_the_store_and_says_it_is_new(tmp_path: Path) -> None:
    created = _cli(tmp_path, "keys", "create", "--team", "ml", "--name", "first", "--json")
    assert created.returncode == 0, created.stderr
    assert "NEW embedded Redis" in created.stderr and str(tmp_path / "var") in created.stderr
    listed = _cli(tmp_path, "keys", "list")
    assert "first" in listed.stdout
    assert (
        listed.stderr.strip()
        == f"gateway: using the embedded Redis in {tmp_path / 'var' / 'redis'}, started for this command"
    )
    assert _open_to_others(tmp_path / "var") == []


def test_the_cli_uses_the_running_gateways_store_and_its_admin_token(running) -> None:
    folder, port, _ = running
    listed = _cli(folder, "keys", "list")
    assert "make-run demo key" in listed.stdout
    assert "of the gateway running there" in listed.stderr
    token = _cli(folder, "admin-token").stdout.strip()
    answer = httpx.get(
        f"http://127.0.0.1:{port}/admin/v1/keys", headers={"Authorization": f"Bearer {token}"}, verify=TLS
    )
    assert answer.status_code == 200 and answer.json()["data"]
