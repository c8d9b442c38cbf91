"""`gateway serve` as a new user runs it: embedded Redis, the simulator, the printed example."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from tests.support import ROOT, TLS, agenerate, free_port, generate, run_together, wait_until


def _serve(tmp_path: Path, name: str, **env: str) -> tuple[subprocess.Popen[bytes], Path, int]:
    port = free_port()
    log = tmp_path / f"{name}.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    clean.update(
        {
            "GATEWAY_PORT": str(port),
            "GATEWAY_STATE_DIR": str(tmp_path / "var"),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--demo-key"],
            env=clean,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, log, port


def _ready(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1, verify=TLS).status_code == 200


def _models_status(port: int, key: str) -> int:
    return httpx.get(
        f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}, verify=TLS
    ).status_code


def _children(pid: int) -> list[str]:
    """Pids whose parent is ``pid``, from /proc (field 4 of stat, after the command in parens)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            found.append(stat.parent.name)
    return found


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.terminate()
    return process.wait(30)


def test_serve_with_nothing_configured_runs_the_printed_example_and_a_second_says_how_to_share(
    tmp_path: Path,
) -> None:
    process, log, port = _serve(tmp_path, "first")
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1, verify=TLS).status_code == 200, 30
        )
        text = log.read_text()
        assert "SIMULATOR" in text and "embedded Redis" in text
        key = re.search(r"sk-gw-[a-z2-7]{12}_[A-Za-z0-9_-]+", text).group(0)
        curl = re.search(r"  (curl -s .*?-d '.*?')\n", text, re.S).group(1)
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60, check=True)
        assert len(json.loads(answer.stdout)["data"]) == 1, answer.stdout
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        image = client.images.generate(model="doubao-seedream-4-5-251128", prompt="a red fox in the snow")
        image_url = image.data[0].url
        assert httpx.get(image_url, timeout=10, verify=TLS).content[:8] == b"\x89PNG\r\n\x1a\n"

        # A second gateway on the same state directory refuses to start, saying how to share it.
        second, second_log, _ = _serve(tmp_path, "second")
        assert second.wait(30) != 0
        second_text = second_log.read_text()
        assert "in use by" in second_text and "GATEWAY_REDIS_URL" in second_text
        assert "Traceback" not in second_text
    finally:
        assert _stop(process) == 0
    assert (tmp_path / "var" / "redis" / "appendonly.aof").exists()


def _readme_block(pattern: str) -> str:
    """A command exactly as README.md prints it (continuation lines included)."""
    return re.search(pattern, (ROOT / "README.md").read_text(), re.S).group(0)


def _newcomer_serve(folder: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, int]:
    """`make run` in ``folder``: no GATEWAY_* setting but the port, state in ./var."""
    port = free_port()
    log = folder / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--demo-key"],
            env=env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, log, port


def _bash(script: str, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        ["bash", "-c", script], env=env, cwd=folder, capture_output=True, text=True, timeout=60
    )


def _readme_commands_work(folder: Path, port: int, text: str) -> tuple[str, str]:
    """README's admin commands, run as printed against the `make run` on ``port`` whose output is
    ``text``; (the demo key, the printed `export GATEWAY_ADMIN_TOKEN=...`)."""
    admin_curl = _readme_block(r"curl -s -X POST http://127\.0\.0\.1:8080/admin/v1/keys.*?}'")
    keys_list = _readme_block(r"\.venv/bin/gateway keys list").replace(
        ".venv/bin/gateway", f"{sys.executable} -m gateway"
    )
    key = re.search(r"sk-gw-[a-z2-7]{12}_[A-Za-z0-9_-]+", text).group(0)
    export = re.search(r"export GATEWAY_ADMIN_TOKEN=\S+", text).group(0)
    assert _models_status(port, key) == 200
    created = _bash(f"{export}\n{admin_curl.replace('8080', str(port))}", folder)
    assert json.loads(created.stdout)["team"] == "design", created.stdout + created.stderr
    listed = _bash(keys_list, folder)
    assert listed.returncode == 0 and "poster-bot" in listed.stdout, listed.stderr
    assert "embedded Redis" in listed.stderr and str(folder / "var") in listed.stderr
    team_curl = _readme_block(r"curl -s -X PUT http://127\.0\.0\.1:8080/admin/v1/teams/design.*?}'")
    team = _bash(f"{export}\n{team_curl.replace('8080', str(port))}", folder)
    assert json.loads(team.stdout)["budget_usd"] == "500.000000", team.stdout + team.stderr
    demo = _bash(f"{sys.executable} -m gateway teams show demo --json", folder)
    assert json.loads(demo.stdout)["budget_usd"] == "50.000000", demo.stdout + demo.stderr
    return key, export


def test_make_run_restarted_keeps_key_and_token_replaces_a_revoked_key_and_survives_a_kill(
    tmp_path: Path,
) -> None:
    """One folder's `make run` started three times (each start costs an embedded Redis, the
    simulator and a gateway, so the three stories share them):

    - README's admin commands work as printed, and a restart keeps the demo key and admin token;
    - a demo key revoked with the CLI is replaced by a new one at the next start;
    - a killed gateway takes its embedded Redis and simulator along, and the next start finds
      the state directory's lock free again.
    """
    first, log, port = _newcomer_serve(tmp_path, "first")
    try:
        wait_until(lambda: _ready(port), 30)
        seen = [_readme_commands_work(tmp_path, port, log.read_text())]
    finally:
        assert _stop(first) == 0

    restarted, log, port = _newcomer_serve(tmp_path, "restarted")
    try:
        wait_until(lambda: _ready(port), 30)
        seen.append(_readme_commands_work(tmp_path, port, log.read_text()))
        assert seen[0] == seen[1]  # the same demo key and admin token after the restart
        for name in ("admin-token", "demo-key"):
            assert (tmp_path / "var" / name).stat().st_mode & 0o777 == 0o600

        key_id = re.search(r"sk-gw-([a-z2-7]{12})_", seen[1][0]).group(1)
        revoked = _bash(f"{sys.executable} -m gateway keys revoke {key_id}", tmp_path)
        assert revoked.returncode == 0, revoked.stderr

        children = subprocess.run(
            ["pgrep", "-P", str(restarted.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 2  # redis-server and the simulator
    finally:
        restarted.kill()
        restarted.wait(10)

    def gone(pid: str) -> bool:
        return not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]

    wait_until(lambda: all(gone(pid) for pid in children), 15, what="children to exit")
    again, log, port = _newcomer_serve(tmp_path, "again")  # the state directory's lock is free again
    try:
        wait_until(lambda: _ready(port), 30)
        replaced = re.search(r"sk-gw-[a-z2-7]{12}_[A-Za-z0-9_-]+", log.read_text()).group(0)
        assert replaced != seen[0][0]
        assert _models_status(port, replaced) == 200
    finally:
        assert _stop(again) == 0


def test_bad_setting_fails_at_start_with_one_clear_line(tmp_path: Path) -> None:
    bad = {
        "GATEWAY_PORT": "eighty",
        "GATEWAY_UPSTREAM_TIMEOUT_S": "-1",
        "GATEWAY_REDIS_URL": "mysql://x",
        "GATEWAY_WORKERS": "0",
    }
    results = run_together(  # side by side: each is a second of imports before it refuses
        [[sys.executable, "-m", "gateway", "serve"]] * len(bad),
        envs=[{**os.environ, "GATEWAY_STATE_DIR": str(tmp_path), name: value} for name, value in bad.items()],
    )
    for name, result in zip(bad, results, strict=True):
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0], result.stderr


def _template_value(path: Path, name: str) -> str:
    """The value a shipped template gives ``name`` (``NAME=value`` or ``NAME: "value"``)."""
    found = re.search(rf'^\s*{name}[=:]\s*"?([^"\n]+)"?\s*$', path.read_text(), re.M)
    assert found, f"{name} is not in {path}"
    return found.group(1)


def test_a_placeholder_secret_fails_at_start_naming_the_variable(tmp_path: Path) -> None:
    """The templates' placeholders and the usual made-up values never start a gateway."""
    env_file, secret = ROOT / ".env.example", ROOT / "deploy/k8s/secret.yaml"
    placeholders = [
        ("GATEWAY_UPSTREAM_API_KEY", _template_value(env_file, "GATEWAY_UPSTREAM_API_KEY")),
        ("GATEWAY_UPSTREAM_API_KEY", _template_value(secret, "GATEWAY_UPSTREAM_API_KEY")),
        ("GATEWAY_ADMIN_TOKEN", _template_value(env_file, "GATEWAY_ADMIN_TOKEN")),
        ("GATEWAY_REDIS_URL", _template_value(secret, "GATEWAY_REDIS_URL")),
        ("GATEWAY_UPSTREAM_API_KEY", "changeme"),
        ("GATEWAY_UPSTREAM_API_KEY", "<the upstream master key>"),
        ("GATEWAY_ADMIN_TOKEN", "xxxxxxxxxxxxxxxx"),
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    results = run_together(
        [[sys.executable, "-m", "gateway", "serve"]] * len(placeholders),
        envs=[
            {**base, "GATEWAY_STATE_DIR": str(tmp_path / f"var-{i}"), name: value}
            for i, (name, value) in enumerate(placeholders)
        ],
    )
    for (name, value), result in zip(placeholders, results, strict=True):
        assert result.returncode == 2, (name, value, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"GATEWAY: invalid setting {name}:".lower() in lines[0].lower(), lines
        assert "placeholder" in lines[0]
        assert len(value) < 12 or value not in lines[0], "the value itself is not printed"
    assert not any((tmp_path / f"var-{i}").exists() for i in range(len(placeholders)))


def test_bad_prices_file_fails_at_start(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  m: {price_usd: '0.1234567'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        env={**os.environ, "GATEWAY_STATE_DIR": str(tmp_path), "GATEWAY_PRICES_FILE": str(prices)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "GATEWAY_PRICES_FILE" in result.stderr and "six decimals" in result.stderr


def test_missing_master_key_refused_when_the_simulator_is_not_allowed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_STATE_DIR": str(tmp_path / "var"), "GATEWAY_ALLOW_SIMULATOR": "false"})
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "GATEWAY_UPSTREAM_API_KEY" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "var").exists()  # refused before the embedded Redis was started


def test_sigterm_fails_readiness_first_then_drains(redis_server, simulator, gateway_factory) -> None:
    """With GATEWAY_DRAIN_S, readiness fails at once while requests are still served."""
    gateway = gateway_factory(redis_server.url, simulator.url, GATEWAY_DRAIN_S="3")
    key, _ = gateway.create_key()
    gateway.process.send_signal(signal.SIGTERM)
    wait_until(
        lambda: httpx.get(f"{gateway.url}/readyz", timeout=1, verify=TLS).status_code == 503,
        5,
        what="readiness fails",
    )
    assert httpx.get(f"{gateway.url}/healthz", timeout=1, verify=TLS).status_code == 200
    during = generate(gateway, key, prompt="still served", timeout=10)
    assert during.status_code == 200
    assert gateway.process.wait(30) == 0


def test_inflight_cap_answers_503_in_the_openai_envelope(redis_server, simulator, gateway_factory) -> None:
    gateway = gateway_factory(redis_server.url, simulator.url, GATEWAY_MAX_INFLIGHT="2")
    key, key_id = gateway.create_key()

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, verify=TLS) as client:
            return await asyncio.gather(
                *(agenerate(client, key, gateway, simulator_fault="delay=1") for _ in range(6))
            )

    responses = asyncio.run(fire())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2 and statuses.count(503) == 4, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json()["error"]["code"] == "overloaded" and refused.headers["x-should-retry"] == "true"
    # The cap is checked after the reservation (the key must be known): a refused call frees it.
    usage = gateway.usage(key_id)
    assert usage["inflight"] == 0 and float(usage["reserved_usd"]) == 0, usage
