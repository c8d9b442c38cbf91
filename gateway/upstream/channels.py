"""The upstream channels: where an image call may go, each with its own key, order, models and cost.

``GATEWAY_CHANNELS_FILE`` names a YAML file (docs/channels.md has an example)::

    channels:
      - name: gogogotoken
        base_url: https://gogogotoken.com
        api_key_env: GOGOGOTOKEN_KEY       # or api_key: ... (the file then holds a secret)
        priority: 1                        # lower is tried first
        weight: 3                          # share among the channels of one priority
        models: [doubao-seedream-4-0-250828]               # default: every priced model
        model_map: {doubao-seedream-4-0-250828: seedream-4-0}   # the channel's own name
        cost_usd: {doubao-seedream-4-0-250828: "0.150"}    # what an image costs the company

Without the file there is one channel, ``default``, from ``GATEWAY_UPSTREAM_BASE_URL`` and
``GATEWAY_UPSTREAM_API_KEY``: an upgrade changes nothing. The file is read and checked once by
``gateway serve`` before any worker starts (:func:`channels_of`); a bad one stops it with one line
naming the field, never a key's value. Each worker reads it again from the same environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway.core.model_names import check_model_name
from gateway.core.settings import Settings, SettingsError, is_placeholder
from gateway.money.micros import usd_to_micros

DEFAULT_CHANNEL = "default"
NAME = re.compile(r"[a-z0-9_-]{1,32}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FIELDS = (
    "name",
    "base_url",
    "api_key",
    "api_key_env",
    "priority",
    "weight",
    "models",
    "model_map",
    "cost_usd",
)
MAX_PRIORITY, MAX_WEIGHT = 1000, 1000
GENERATIONS_PATH = "/v1/images/generations"


@dataclass(frozen=True)
class ChannelSpec:
    """One channel as configured. ``models`` None: every priced model. ``cost_micros``: what one
    image of a model costs the company there (a model without one costs its price)."""

    name: str
    url: str  # the generations endpoint the calls are POSTed to
    api_key: str = field(repr=False)
    priority: int = 1
    weight: int = 1
    models: frozenset[str] | None = None
    model_map: Mapping[str, str] = field(default_factory=dict)
    cost_micros: Mapping[str, int] = field(default_factory=dict)

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models


class ChannelsError(ValueError):
    """What is wrong with the channels file, in one line naming the field."""


def channels_of(settings: Settings, environ: Mapping[str, str] | None = None) -> tuple[ChannelSpec, ...]:
    """The configured channels: the file's, or the one ``default`` channel of the upstream settings.

    Raises :class:`SettingsError` naming ``GATEWAY_CHANNELS_FILE`` and the field at fault."""
    if settings.channels_file is None:
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else ""
        return (ChannelSpec(DEFAULT_CHANNEL, settings.upstream_url, key),)
    try:
        return load_channels_file(settings.channels_file, os.environ if environ is None else environ)
    except (OSError, ChannelsError) as exc:
        raise SettingsError(f"invalid setting GATEWAY_CHANNELS_FILE: {exc}") from None


def load_channels_file(path: Path, environ: Mapping[str, str]) -> tuple[ChannelSpec, ...]:
    """Read and check a channels file; :class:`ChannelsError` says what is wrong, where."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ChannelsError(f"{path}: not valid YAML{where}") from None
    listed = document.get("channels") if isinstance(document, dict) else None
    if not isinstance(listed, list) or not listed:
        raise ChannelsError(f"{path}: expected 'channels:' with a list of at least one channel")
    if isinstance(document, dict) and set(document) - {"channels"}:
        raise ChannelsError(f"{path}: unknown top-level field {sorted(set(document) - {'channels'})[0]!r}")
    specs: list[ChannelSpec] = []
    for index, entry in enumerate(listed):
        spec = _channel(f"channels[{index}]", entry, environ)
        if any(other.name == spec.name for other in specs):
            raise ChannelsError(f"channels[{index}].name: {spec.name!r} is used twice")
        specs.append(spec)
    return tuple(specs)


def _channel(where: str, entry: Any, environ: Mapping[str, str]) -> ChannelSpec:
    if not isinstance(entry, dict):
        raise ChannelsError(f"{where}: expected a mapping with name, base_url and api_key or api_key_env")
    name = entry.get("name")
    if not isinstance(name, str) or NAME.fullmatch(name) is None:
        raise ChannelsError(f"{where}.name: 1-32 characters of a-z, 0-9, '_' and '-'")
    where = f"{where} ({name})"
    unknown = [field for field in entry if field not in FIELDS]
    if unknown:
        raise ChannelsError(f"{where}: unknown field {str(unknown[0])!r} (fields: {', '.join(FIELDS)})")
    models = _models(f"{where}.models", entry.get("models"))
    model_map = _model_table(f"{where}.model_map", entry.get("model_map"), models, _upstream_name)
    costs = _model_table(f"{where}.cost_usd", entry.get("cost_usd"), models, _usd)
    return ChannelSpec(
        name=name,
        url=generations_url(_base_url(f"{where}.base_url", entry.get("base_url"))),
        api_key=_api_key(where, entry, environ),
        priority=_whole(f"{where}.priority", entry.get("priority", 1), 0, MAX_PRIORITY),
        weight=_whole(f"{where}.weight", entry.get("weight", 1), 1, MAX_WEIGHT),
        models=models,
        model_map=model_map,
        cost_micros=costs,
    )


def generations_url(base_url: str) -> str:
    """A channel's generations endpoint: ``/v1/images/generations`` on a bare host, else
    ``/images/generations`` after the base URL's path, as an OpenAI SDK's ``base_url`` takes it
    (Ark's ``https://ark.cn-beijing.volces.com/api/v3``, a reseller's ``https://.../v1``)."""
    base = base_url.rstrip("/")
    return base + (GENERATIONS_PATH if not urlsplit(base).path else "/images/generations")


def _base_url(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ChannelsError(f"{where}: required, an http:// or https:// URL")
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ChannelsError(f"{where}: not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelsError(f"{where}: must be an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ChannelsError(f"{where}: no credentials, query or fragment (the key goes in api_key)")
    if parts.path.rstrip("/").endswith("/images/generations"):
        raise ChannelsError(f"{where}: the base URL only; the gateway adds /images/generations")
    return value.strip()


def _api_key(where: str, entry: dict[str, Any], environ: Mapping[str, str]) -> str:
    """The key, from ``api_key`` or the variable ``api_key_env`` names; never echoed in an error."""
    if ("api_key" in entry) == ("api_key_env" in entry):
        raise ChannelsError(f"{where}: give exactly one of api_key and api_key_env")
    if "api_key_env" in entry:
        variable = entry["api_key_env"]
        if not isinstance(variable, str) or ENV_NAME.fullmatch(variable) is None:
            raise ChannelsError(f"{where}.api_key_env: the name of an environment variable")
        key, what = environ.get(variable, ""), f"{where}.api_key_env: the variable {variable}"
        if not key.strip():
            raise ChannelsError(f"{what} is not set or empty")
    else:
        key, what = entry["api_key"], f"{where}.api_key"
        if not isinstance(key, str) or not key.strip():
            raise ChannelsError(f"{what}: must be a non-empty string")
    key = key.strip()  # a variable filled from a file often ends in a newline
    if is_placeholder(key):
        raise ChannelsError(
            f"{what} holds a placeholder ('replace...', 'changeme', '<...>'), not the real key"
        )
    if any(c in key for c in "\r\n\x00") or not key.isprintable():
        raise ChannelsError(f"{what} holds a character a header cannot carry")
    return key


def _whole(where: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ChannelsError(f"{where}: a whole number from {low} to {high}")
    return value


def _models(where: str, value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ChannelsError(f"{where}: a list of model names (leave it out for every priced model)")
    return frozenset(_model_name(where, name) for name in value)


def _model_name(where: str, name: Any) -> str:
    try:
        return check_model_name(name)
    except ValueError as exc:
        raise ChannelsError(f"{where}: {exc}") from None


def _model_table(where: str, value: Any, models: frozenset[str] | None, parse: Any) -> dict[str, Any]:
    """``{model: value}``, each model one the channel serves."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ChannelsError(f"{where}: a mapping of model name to value")
    table: dict[str, Any] = {}
    for model, item in value.items():
        name = _model_name(where, model)
        if models is not None and name not in models:
            raise ChannelsError(f"{where}: {name!r} is not in the channel's models")
        table[name] = parse(f"{where}.{name}", item)
    return table


def _upstream_name(where: str, value: Any) -> str:
    return _model_name(where, value)


def _usd(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ChannelsError(f'{where}: a USD amount per image, such as "0.150"')
    try:
        return usd_to_micros(value)
    except ValueError as exc:
        raise ChannelsError(f"{where}: {exc}") from None
