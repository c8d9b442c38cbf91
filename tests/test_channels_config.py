"""The channels file: read and checked once by ``gateway serve`` before anything starts.

A bad file stops the gateway with exit code 2 and one line that names the setting and the field
at fault, never a key's value; a good one is read the same way by every worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.settings import load_settings
from gateway.upstream.channels import (
    DEFAULT_CHANNEL,
    ChannelsError,
    channels_of,
    generations_url,
    load_channels_file,
)
from tests.support import ROOT

SECRET = "sk-real-looking-secret-0123456789"
GOOD = {"name": "ark", "base_url": "https://ark.cn-beijing.volces.com/api/v3", "api_key_env": "ARK_KEY"}


def serve(**env: str) -> subprocess.CompletedProcess[str]:
    """``gateway serve`` with these settings added to the environment (it is refused, or stopped)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def serve_with(tmp_path: Path, document: Any, **env: str) -> subprocess.CompletedProcess[str]:
    """``gateway serve`` with a channels file holding ``document`` (a YAML text, or data to dump)."""
    path = tmp_path / "channels.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return serve(
        GATEWAY_CHANNELS_FILE=str(path),
        GATEWAY_STATE_DIR=str(tmp_path / "state"),
        GATEWAY_REDIS_URL="redis://127.0.0.1:1/0",  # never reached: the file is refused first
        ARK_KEY=SECRET,
        **env,
    )


BAD_FILES = [
    # what is wrong, the document, what the one line must name
    ("no list", {"channels": []}, "'channels:'"),
    ("unknown field", {"channels": [{**GOOD, "wieght": 2}]}, "channels[0] (ark): unknown field 'wieght'"),
    ("bad name", {"channels": [{**GOOD, "name": "Ark Cn"}]}, "channels[0].name"),
    ("a name twice", {"channels": [GOOD, GOOD]}, "channels[1].name: 'ark' is used twice"),
    ("no url", {"channels": [{k: v for k, v in GOOD.items() if k != "base_url"}]}, "(ark).base_url"),
    ("ftp url", {"channels": [{**GOOD, "base_url": "ftp://ark.example"}]}, "(ark).base_url"),
    ("key in the url", {"channels": [{**GOOD, "base_url": "https://u:p@ark.example"}]}, "(ark).base_url"),
    ("two keys", {"channels": [{**GOOD, "api_key": SECRET}]}, "exactly one of api_key and api_key_env"),
    ("no key", {"channels": [{k: v for k, v in GOOD.items() if k != "api_key_env"}]}, "exactly one of"),
    (
        "unset variable",
        {"channels": [{**GOOD, "api_key_env": "NOT_SET_ANYWHERE"}]},
        "NOT_SET_ANYWHERE is not set",
    ),
    ("placeholder key", {"channels": [{**GOOD, "api_key_env": "PLACEHOLDER"}]}, "placeholder"),
    ("weight 0", {"channels": [{**GOOD, "weight": 0}]}, "(ark).weight: a whole number from 1 to 1000"),
    ("priority a float", {"channels": [{**GOOD, "priority": 1.5}]}, "(ark).priority"),
    ("bad model", {"channels": [{**GOOD, "models": ["no spaces allowed"]}]}, "(ark).models"),
    ("cost a word", {"channels": [{**GOOD, "cost_usd": {"m": "cheap"}}]}, "(ark).cost_usd.m"),
    ("cost negative", {"channels": [{**GOOD, "cost_usd": {"m": "-0.1"}}]}, "(ark).cost_usd.m"),
    ("cost 7 decimals", {"channels": [{**GOOD, "cost_usd": {"m": "0.1234567"}}]}, "(ark).cost_usd.m"),
    (
        "a cost of a model it does not serve",
        {"channels": [{**GOOD, "models": ["a"], "cost_usd": {"b": "0.1"}}]},
        "(ark).cost_usd: 'b' is not in the channel's models",
    ),
    ("map to nothing", {"channels": [{**GOOD, "model_map": {"m": ""}}]}, "(ark).model_map"),
    ("not YAML", "channels: [ {name: ark", "not valid YAML (line"),
]


@pytest.mark.parametrize(("what", "document", "named"), BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_a_bad_channels_file_stops_serve_with_one_line_naming_the_field(
    tmp_path: Path, what: str, document: Any, named: str
) -> None:
    done = serve_with(tmp_path, document, PLACEHOLDER="replace-with-the-ark-key")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gateway: invalid setting GATEWAY_CHANNELS_FILE: "), lines[0]
    assert named in lines[0]
    assert SECRET not in done.stderr and "replace-with-the-ark-key" not in done.stderr
    assert not (tmp_path / "state").exists(), "refused before anything was created"


def test_a_channels_file_that_is_not_there_is_named(tmp_path: Path) -> None:
    done = serve(GATEWAY_CHANNELS_FILE=str(tmp_path / "nope.yaml"), GATEWAY_STATE_DIR=str(tmp_path / "state"))
    assert done.returncode == 2 and "GATEWAY_CHANNELS_FILE" in done.stderr and "nope.yaml" in done.stderr


def test_a_channel_reads_as_configured_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "channels": [
                    {"name": "gogogotoken", "base_url": "https://gogogotoken.com", "api_key": SECRET},
                    {
                        **GOOD,
                        "priority": 2,
                        "weight": 3,
                        "models": ["doubao-seedream-4-0-250828"],
                        "model_map": {"doubao-seedream-4-0-250828": "ep-20261201-abcde"},
                        "cost_usd": {"doubao-seedream-4-0-250828": "0.150"},
                    },
                ]
            }
        )
    )
    first, ark = load_channels_file(path, {"ARK_KEY": " " + SECRET + "\n"})
    assert (first.name, first.priority, first.weight, first.models, first.cost_micros) == (
        "gogogotoken",
        1,
        1,
        None,
        {},
    )
    assert first.url == "https://gogogotoken.com/v1/images/generations"
    assert first.serves("anything-priced")
    assert ark.url == "https://ark.cn-beijing.volces.com/api/v3/images/generations"
    assert (ark.api_key, ark.priority, ark.weight) == (SECRET, 2, 3)
    assert ark.serves("doubao-seedream-4-0-250828") and not ark.serves("doubao-seedream-4-5-251128")
    assert ark.model_map == {"doubao-seedream-4-0-250828": "ep-20261201-abcde"}
    assert ark.cost_micros == {"doubao-seedream-4-0-250828": 150_000}
    assert SECRET not in repr(ark), "a channel's key is never in its repr (logs, tracebacks)"


def test_a_base_url_is_read_as_an_openai_sdk_reads_it() -> None:
    assert generations_url("https://gogogotoken.com") == "https://gogogotoken.com/v1/images/generations"
    assert generations_url("https://gogogotoken.com/") == "https://gogogotoken.com/v1/images/generations"
    assert generations_url("https://reseller.example/v1") == "https://reseller.example/v1/images/generations"
    assert (
        generations_url("https://ark.ap-southeast.bytepluses.com/api/v3/")
        == "https://ark.ap-southeast.bytepluses.com/api/v3/images/generations"
    )


def test_without_a_file_there_is_one_default_channel_of_the_upstream_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_CHANNELS_FILE", raising=False)
    monkeypatch.setenv("GATEWAY_UPSTREAM_BASE_URL", "https://proxy.example/prefix")
    monkeypatch.setenv("GATEWAY_UPSTREAM_API_KEY", SECRET)
    (only,) = channels_of(load_settings())
    assert (only.name, only.api_key, only.priority, only.weight, only.models) == (
        DEFAULT_CHANNEL,
        SECRET,
        1,
        1,
        None,
    )
    # exactly the URL the gateway called before channels existed
    assert only.url == "https://proxy.example/prefix/v1/images/generations"


def test_a_key_that_could_break_the_request_head_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(yaml.safe_dump({"channels": [{**GOOD, "api_key_env": "BROKEN"}]}))
    with pytest.raises(ChannelsError, match=r"\(ark\)\.api_key_env: the variable BROKEN holds a character"):
        load_channels_file(path, {"BROKEN": "sk-abc\r\nX-Injected: 1"})


def test_the_shipped_example_is_a_valid_channels_file() -> None:
    example = ROOT / "deploy" / "channels.example.yaml"
    gogo, ark = load_channels_file(example, {"GOGOGOTOKEN_API_KEY": SECRET, "ARK_API_KEY": SECRET + "-ark"})
    assert (gogo.name, gogo.priority, ark.name, ark.priority) == ("gogogotoken", 1, "ark", 2)
    assert ark.url == "https://ark.cn-beijing.volces.com/api/v3/images/generations"
