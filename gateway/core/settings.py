"""GATEWAY_* configuration, validated once at start-up.

Every setting is read from the environment (prefix ``GATEWAY_``) by pydantic-settings. A bad value
fails ``gateway serve`` before it binds a port, with one line naming the variable, instead of at
the first request or in a worker restart loop.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_UPSTREAM = "https://gogogotoken.com"


MIN_DEFAULT_PENDING_PER_CLIENT = 1024


def issuer_allowed(url: str) -> bool:
    """An OpenID issuer the console may trust: https, or plain http only on this machine's loopback
    (tests, local trials), where nobody on a network can read or change what it answers."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if not host or parts.query or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """The gateway's configuration. Field names are the variables without the prefix."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    upstream_base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl(DEFAULT_UPSTREAM),
        description="Where image calls are forwarded (the upstream's base URL, no /v1).",
    )
    upstream_api_key: SecretStr | None = Field(
        default=None,
        description="The company's master key for the upstream. Unset: `gateway serve` runs the "
        "built-in simulator instead and says so.",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://, rediss:// or redis+sentinel:// URL. Unset: an embedded redis-server "
        "is started with its data under GATEWAY_STATE_DIR.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for /admin/v1. Unset: the admin API answers 503."
    )
    prices_file: Path | None = Field(
        default=None, description="YAML price table that overrides the built-in defaults."
    )
    channels_file: Path | None = Field(
        default=None,
        description="YAML file of upstream channels (docs/channels.md): each with its own URL, key, "
        "priority, weight, models and cost per image. Unset: one channel named default, from "
        "GATEWAY_UPSTREAM_BASE_URL and GATEWAY_UPSTREAM_API_KEY.",
    )
    channel_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long a channel rests after failing GATEWAY_CHANNEL_FAILURES times in a row "
        "(or at once after refusing the gateway's key or balance); then one live call tests it.",
    )
    channel_failures: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failures in a row, across replicas, after which a channel rests.",
    )
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes.")
    listen_backlog: int = Field(
        default=16384,
        ge=64,
        le=1_000_000,
        description="Connections the kernel queues before they are accepted (capped by "
        "net.core.somaxconn): a burst of calls arriving at once must not be dropped.",
    )
    upstream_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="Total time allowed for one upstream call."
    )
    upstream_stream_idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description='With "stream": true, the longest wait for the upstream\'s headers and between '
        "two pieces of its stream; a stream quiet longer has stalled and ends with an error event. "
        "GATEWAY_UPSTREAM_TIMEOUT_S still bounds the whole stream (the reservation lives that long).",
    )
    upstream_connect_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="Time allowed to open a connection upstream."
    )
    upstream_max_connections: int = Field(
        default=10_000,
        ge=1,
        description="Connection pool size towards the upstream. Each call in flight holds one for "
        "the whole upstream call, so below GATEWAY_MAX_INFLIGHT calls queue behind it, each "
        "waiting for whole upstream calls to end.",
    )
    max_upstream_response_bytes: int = Field(
        default=1536 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest upstream answer accepted; past it the call is refused (502 "
        "upstream_response_too_large, or the caller's connection cut if the answer was already "
        "being streamed), charged nothing and recorded for reconciliation. Default 1.5 GiB: "
        "Seedream's largest honest answer is 15 images of 4K (4096x4096, 16.8 MP) as base64; a "
        "PNG that does not compress at all is 16.8 MP x 3 bytes = 50 MB, 67 MB in base64, so 15 "
        "of them are 1.01 GB (1.34 GB even with an alpha channel). Memory does not depend on "
        "this bound: answers over 1 MiB are streamed, never buffered.",
    )
    redis_max_connections: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Redis connections one worker opens (per node of a Cluster); commands share "
        "them and wait their turn in a burst instead of opening one each.",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted (image-to-image inputs ride in it), else 413.",
    )
    max_prompt_chars: int = Field(default=32_000, ge=1, description="Longest prompt accepted.")
    state_dir: Path = Field(
        default=Path("./var"),
        description="Where a process keeps local state (embedded Redis, spool, metrics files).",
    )
    reservation_grace_s: float = Field(
        default=60.0,
        gt=0,
        description="Added to the upstream timeout: after that long a reservation left by a "
        "crashed process is released by itself.",
    )
    orphan_sweep_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often every team's reservations left by crashed processes are looked "
        "for and released (a team's own calls release them too).",
    )
    ledger_retention_days: int = Field(
        default=400, ge=1, description="How long raw usage records are kept (rollups: forever)."
    )
    idempotency_ttl_s: int = Field(
        default=86_400, ge=60, description="How long an Idempotency-Key result is replayed."
    )
    max_inflight: int = Field(
        default=2000,
        ge=1,
        le=10_000,
        description="Image requests one worker holds at once; more get 503 (memory is bounded by "
        "in-flight requests x response size).",
    )
    body_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="Time allowed to receive a request's whole body, else 408 and the connection "
        "is closed: a stranger trickling a body cannot hold a connection longer.",
    )
    max_pending_per_client: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Image requests one client address may have whose body is still arriving or "
        "whose key is not yet checked; more get 429. Unset: GATEWAY_MAX_INFLIGHT (at least 1024), "
        "so a batch job on one host may fire as many calls at once as the worker takes (a smaller "
        "fixed cap refused most of such a burst), and a small in-flight cap still answers its "
        "own 503 rather than this 429. Behind a proxy, the proxy's address unless FORWARDED_ALLOW_IPS "
        "trusts its X-Forwarded-For.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Largest request line plus headers accepted, else 431 and the connection is closed.",
    )
    drain_s: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="After SIGTERM, keep serving this long with /readyz answering 503 so load "
        "balancers stop sending traffic; then in-flight requests finish and the process exits.",
    )
    allow_simulator: bool = Field(
        default=True,
        description="With no GATEWAY_UPSTREAM_API_KEY, start the built-in simulator (true) or "
        "refuse to start (false: production, where a missing secret must not serve fake images).",
    )
    admin_auth_max_failures: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="Wrong admin tokens (API or console sign-in) one client address may send within "
        "a minute; past it that address gets 429 for GATEWAY_ADMIN_AUTH_BLOCK_S, whatever it sends.",
    )
    admin_auth_block_s: int = Field(
        default=300, ge=1, le=86_400, description="How long an address that guessed too often is refused."
    )
    console_session_ttl_s: int = Field(
        default=8 * 3600,
        ge=60,
        le=7 * 86_400,
        description="How long a console sign-in lasts (from sign-in, not from the last click).",
    )
    audit_retention_days: int = Field(
        default=400,
        ge=1,
        le=3650,
        description="How long audit entries (every change, by whom, through what) are kept in Redis.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="The OpenID provider for console single sign-on (discovery at "
        "{issuer}/.well-known/openid-configuration); https, or http on a loopback address. Unset: "
        "no SSO, the console signs in with tokens only.",
    )
    oidc_client_id: str | None = Field(default=None, description="The console's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="The console's client secret at the provider (client_secret_basic)."
    )
    oidc_roles_claim: str = Field(
        default="groups", min_length=1, description="The ID token claim that lists the person's groups."
    )
    oidc_group_prefix: str = Field(
        default="gateway-",
        description="Groups that grant a role: {prefix}admin, {prefix}finance, {prefix}team-admin:<team>.",
    )
    alert_webhook_url: AnyHttpUrl | None = Field(
        default=None,
        description="Where budget alerts are POSTed (alerts/). Unset: no sender runs and alerts wait "
        "in Redis (those older than GATEWAY_ALERT_MAX_AGE_S are dropped once a sender runs).",
    )
    alert_webhook_secret: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="HMAC-SHA256 key of the x-gateway-signature header; required with the URL, so "
        "an alert is never sent unsigned.",
    )
    alert_webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Time allowed for one webhook POST (then retried)."
    )
    alert_max_age_s: int = Field(
        default=3 * 86_400,
        ge=60,
        description="A queued alert older than this is dropped (outcome expired) instead of sent: "
        "news of a budget threshold days late misleads more than it helps. 3 days covers a weekend "
        "outage of the receiver.",
    )
    log_prompts: bool = Field(default=False, description="Put prompts in the access log.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        schemes = ("redis://", "rediss://", "unix://", "redis+sentinel://")
        if not value.startswith(schemes):
            raise ValueError(f"must start with one of {', '.join(schemes)}")
        return value

    @field_validator("oidc_issuer", "oidc_client_id", mode="before")
    @classmethod
    def _empty_text_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer_scheme(cls, value: str | None) -> str | None:
        if value is not None and not issuer_allowed(value):
            raise ValueError(
                "must be an https URL (http only on a loopback address: 127.0.0.1, ::1 or localhost)"
            )
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_issuer is not None and (self.oidc_client_id is None or self.oidc_client_secret is None):
            raise ValueError(
                "GATEWAY_OIDC_ISSUER needs GATEWAY_OIDC_CLIENT_ID and GATEWAY_OIDC_CLIENT_SECRET as well"
            )
        return self

    @field_validator("upstream_api_key", "admin_token", "oidc_client_secret")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        return value

    @field_validator("alert_webhook_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("alert_webhook_secret")
    @classmethod
    def _secret_with_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip() == "":
            value = None
        if value is None and info.data.get("alert_webhook_url") is not None:
            raise ValueError("required when GATEWAY_ALERT_WEBHOOK_URL is set (alerts are signed)")
        return value

    @property
    def pending_per_client_cap(self) -> int:
        """GATEWAY_MAX_PENDING_PER_CLIENT, or by default the in-flight cap (at least 1024)."""
        return self.max_pending_per_client or max(self.max_inflight, MIN_DEFAULT_PENDING_PER_CLIENT)

    @property
    def upstream_url(self) -> str:
        """The full URL of the upstream's generations endpoint."""
        return str(self.upstream_base_url).rstrip("/") + "/v1/images/generations"

    @property
    def reservation_ttl_s(self) -> int:
        """How long a reservation may live before it is presumed orphaned."""
        return int(self.upstream_timeout_s + self.reservation_grace_s) + 1


# What a template's unfilled value looks like: .env.example's "replace-with-...", the Kubernetes
# Secret's "REPLACE_ME-...", and the usual made-up values. A gateway started with one answers
# every call 502 (or every admin call 401) while /readyz says it is fine.
_PLACEHOLDER = re.compile(r"^(replace|change[-_ ]?me|xxx|todo\b|<.*>$)", re.IGNORECASE)
# In a URL the placeholder sits inside (a password, a path): only the unmistakable ones.
_PLACEHOLDER_IN_URL = re.compile(r"replace[-_](me|with)|change[-_]?me|<[^>]*>", re.IGNORECASE)
SECRET_SETTINGS = ("upstream_api_key", "admin_token", "alert_webhook_secret")
URL_SETTINGS = ("redis_url", "alert_webhook_url")


def placeholder_setting(settings: Settings) -> str | None:
    """The one-line refusal for a setting still holding a template's placeholder, else None.

    The line names the variable and what gave it away, never the value (it may be a secret)."""
    for name in SECRET_SETTINGS:
        value = getattr(settings, name)
        if is_placeholder(value.get_secret_value() if value is not None else ""):
            return (
                f"invalid setting GATEWAY_{name.upper()}: it holds a placeholder (a value like "
                "'replace...', 'REPLACE_ME...', 'changeme', '<...>' or 'xxx...'), not the real one"
            )
    for name in URL_SETTINGS:
        url = getattr(settings, name)
        if url is not None and _PLACEHOLDER_IN_URL.search(str(url)):
            return (
                f"invalid setting GATEWAY_{name.upper()}: it holds a placeholder ('REPLACE_ME', "
                "'replace-with', 'changeme' or '<...>'), not the real value"
            )
    return None


def is_placeholder(secret: str) -> bool:
    """Whether a secret still holds a template's placeholder (a channel's key is checked too)."""
    text = secret.strip()
    return bool(text) and _PLACEHOLDER.match(text) is not None


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it in one line."""


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment, turning pydantic's report into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a rule between settings: its message names them
            message = str(first["msg"]).removeprefix("Value error, ")
            raise SettingsError(f"invalid settings: {message}") from None
        name = "GATEWAY_" + str(first["loc"][0]).upper()
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None
