"""Team keys: issue, hash, look up, update, revoke, rotate.

A key looks like ``sk-gw-<key_id>_<secret>``. The key_id is public (it names the key in lists,
reports and its Redis hash tag); the secret is 256 random bits, shown once, and Redis keeps only
the SHA-256 of the whole key. A salted or slow hash adds nothing for a secret of that entropy, and
SHA-256 lets the reserve script compare hashes without a second round trip.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.admin import previous_secrets
from gateway.admin.teams import check_team_name
from gateway.core.model_names import check_model_name
from gateway.money import thresholds
from gateway.money.budget_fields import MAX_LIMIT, BudgetFields
from gateway.money.micros import micros_to_usd, usd_to_micros
from gateway.store.directory import KeyDirectory, spaces_of
from gateway.store.keyspace import KEY_REGISTRY, TEAM_REGISTRY, KeySpace, TeamSpace, directory_entry
from gateway.store.pipelined import pipelined
from gateway.store.protocol import Redis

TOKEN_PREFIX = "sk-gw-"
KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
KEY_ID_LENGTH = 12
DEFAULT_ROTATE_GRACE_S = 3600
_TOKEN_RE = re.compile(r"sk-gw-([a-z2-7]{12})_([A-Za-z0-9_-]{20,128})")
KEY_ID_RE = re.compile(r"[a-z2-7]{12}")  # matched whole (fullmatch), as every name is

def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """Return (key_id, sha256 of the token) for a well-formed key, else None."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    return match.group(1), hash_token(token)


def shown_key_id(text: str) -> str:
    """How an error names a key_id someone gave: itself if it is one, else a description, never
    the text (a whole key pasted where a key_id belongs must not be printed or answered back)."""
    if KEY_ID_RE.fullmatch(text):
        return f"key_id '{text}'"
    if text.startswith("sk-"):
        return (
            "that key_id (what was given is a secret key, not printed here; a key_id is the 12 "
            "characters after sk-gw-)"
        )
    return "that key_id (a key_id is 12 characters, a-z and 2-7, as `gateway keys list` shows)"


def new_key_id() -> str:
    return "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))


def new_token(key_id: str) -> str:
    return f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


class KeyLimits(BudgetFields):
    """The limits a key may carry; every one is optional, None meaning unlimited."""

    models: list[str] | None = Field(default=None, description="Models the key may use; null: all.")
    expires_at: datetime | None = Field(default=None, description="ISO 8601; naive means UTC.")
    # Upper bounds keep every number exact in the Lua scripts and printable as JSON.
    rpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT, description="Requests per minute.")
    max_concurrent: int | None = Field(default=None, ge=1, le=MAX_LIMIT)

    @field_validator("expires_at")
    @classmethod
    def _after_epoch(cls, value: datetime | None) -> datetime | None:
        # 0 means "never expires" in the record: an earlier date must not turn into that.
        if value is not None and _ms(value) <= 0:
            raise ValueError("expires_at must be after 1970-01-01T00:00:00Z")
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            check_model_name(name)
        return value


class RotateRequest(BaseModel):
    """``POST .../rotate`` (admin API and console): how long the old secret keeps working."""

    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        default=DEFAULT_ROTATE_GRACE_S,
        ge=0,
        le=30 * 86400,
        description="How long the old secret keeps working.",
    )


class KeyCreate(KeyLimits):
    team: str = Field(description="Team the key belongs to (letters, digits, _ . -).")
    name: str = Field(min_length=1, max_length=100, description="A name people recognise.")

    @field_validator("team")
    @classmethod
    def _team_label(cls, value: str) -> str:
        return check_team_name(value)


def _ms(value: datetime | None) -> int:
    if value is None:
        return 0
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def _iso(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def limits_to_fields(limits: KeyLimits, only_set: bool = False) -> dict[str, str | int]:
    """Translate limits into the record's hash fields (-1 and "" mean unlimited)."""
    given = limits.model_fields_set if only_set else set(KeyLimits.model_fields)
    fields: dict[str, str | int] = {}
    if "models" in given:
        fields["models"] = "," + ",".join(limits.models) + "," if limits.models else ""
    if "expires_at" in given:
        fields["expires_at"] = _ms(limits.expires_at)
    if "budget_usd" in given:
        fields["budget_micros"] = -1 if limits.budget_usd is None else usd_to_micros(limits.budget_usd)
    if "budget_period" in given or (not only_set):
        fields["budget_period"] = limits.budget_period or "month"
    for name in ("images_per_day", "rpm", "max_concurrent"):
        if name in given:
            value = getattr(limits, name)
            fields[name] = -1 if value is None else value
    if "alert_thresholds" in given:
        fields["alert_thresholds"] = thresholds.stored(thresholds.parse_list(limits.alert_thresholds or []))
    return fields


def record_to_json(record: dict[str, str]) -> dict[str, Any]:
    """A key as the admin API and the CLI show it: never its secret or hash."""

    def limit(name: str) -> int | None:
        value = int(record.get(name, "-1"))
        return None if value < 0 else value

    budget = int(record.get("budget_micros", "-1"))
    models = record.get("models", "")
    return {
        "key_id": record["key_id"],
        "team": record["team"],
        "name": record["name"],
        "last4": record.get("last4", ""),
        "created_at": _iso(int(record.get("created_at", "0"))),
        "revoked_at": _iso(int(record.get("revoked_at", "0"))),
        "rotated_at": _iso(int(record.get("rotated_at", "0"))),
        "expires_at": _iso(int(record.get("expires_at", "0"))),
        "status": key_status(record),
        "models": [m for m in models.split(",") if m] or None,
        "budget_usd": None if budget < 0 else micros_to_usd(budget),
        "budget_period": record.get("budget_period", "month") if budget >= 0 else None,
        "images_per_day": limit("images_per_day"),
        "rpm": limit("rpm"),
        "max_concurrent": limit("max_concurrent"),
        "alert_thresholds": thresholds.shown(record.get("alert_thresholds")),
    }


def key_status(record: dict[str, str], now_ms: int | None = None) -> str:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if int(record.get("revoked_at", "0")):
        return "revoked"
    expires = int(record.get("expires_at", "0"))
    if expires and now_ms >= expires:
        return "expired"
    return "active"


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


class KeyStore:
    """Team keys in Redis. Used by the admin API, the CLI and the gateway's non-hot paths."""

    def __init__(self, redis: Redis, directory: KeyDirectory | None = None) -> None:
        self.redis = redis
        self.directory = directory or KeyDirectory(redis)

    async def create(self, spec: KeyCreate) -> tuple[str, dict[str, Any]]:
        """Issue a key; returns the secret (shown once) and the stored record."""
        key_id = new_key_id()
        token = new_token(key_id)
        fields: dict[str, str | int] = {
            "key_id": key_id,
            "team": spec.team,
            "name": spec.name,
            "secret_hash": hash_token(token),
            "last4": token[-4:],
            "created_at": int(time.time() * 1000),
            "revoked_at": 0,
            **limits_to_fields(spec),
        }
        # Registries first, the directory entry last: on a cluster they live on different nodes,
        # and a registry entry without a record is skipped by listings, while a record missing
        # from the registries would be a working key that no list or report shows. The
        # directory entry is what makes the key usable.
        space = KeySpace(key_id, spec.team)
        await self.redis.sadd(KEY_REGISTRY, key_id)
        await self.redis.sadd(TEAM_REGISTRY, spec.team)
        await self.redis.sadd(TeamSpace(spec.team).keys, key_id)
        await self.redis.hset(space.record, mapping=fields)
        await self.redis.hset(directory_entry(key_id), "team", spec.team)
        return token, record_to_json({k: str(v) for k, v in fields.items()})

    async def space_of(self, key_id: str) -> KeySpace | None:
        return await self.directory.space_of(key_id)

    async def get_record(self, key_id: str) -> dict[str, str] | None:
        space = await self.space_of(key_id)
        if space is None:
            return None
        raw = await self.redis.hgetall(space.record)
        return _decode(raw) if raw else None

    async def get(self, key_id: str) -> dict[str, Any] | None:
        record = await self.get_record(key_id)
        return record_to_json(record) if record else None

    async def list(self, team: str | None = None) -> list[dict[str, Any]]:
        """Every key (of ``team``), in key_id order: a few pipelined round trips, not one per key."""
        source = TeamSpace(team).keys if team is not None else KEY_REGISTRY
        key_ids = sorted(k.decode() for k in await self.redis.smembers(source))
        spaces = await spaces_of(self.redis, key_ids)
        commands = ((k, ("hgetall", spaces[k].record)) for k in key_ids if k in spaces)
        return [record_to_json(_decode(raw)) async for _, raw in pipelined(self.redis, commands) if raw]

    async def key_ids(self) -> builtins.list[str]:
        return sorted(k.decode() for k in await self.redis.smembers(KEY_REGISTRY))

    async def update(self, key_id: str, limits: KeyLimits) -> dict[str, Any] | None:
        record = await self.get_record(key_id)
        if record is None:
            return None
        fields = limits_to_fields(limits, only_set=True)
        if fields:
            await self.redis.hset(KeySpace(key_id, record["team"]).record, mapping=fields)
        return await self.get(key_id)

    async def revoke(self, key_id: str) -> dict[str, Any] | None:
        """Revoke at once: the reserve script reads ``revoked_at`` on every request."""
        record = await self.get_record(key_id)
        if record is None:
            return None
        await self.redis.hset(KeySpace(key_id, record["team"]).record, "revoked_at", int(time.time() * 1000))
        return await self.get(key_id)

    async def rotate(
        self, key_id: str, grace_s: int = DEFAULT_ROTATE_GRACE_S
    ) -> tuple[str, dict[str, Any]] | None:
        """A new secret for the same key_id, limits and spend; the old one works ``grace_s`` more."""
        record = await self.get_record(key_id)
        if record is None:
            return None
        token = new_token(key_id)
        now = int(time.time() * 1000)
        space = KeySpace(key_id, record["team"])
        await self.redis.hset(
            space.record,
            mapping={
                "secret_hash": hash_token(token),
                "last4": token[-4:],
                "prev_secrets": previous_secrets.after_rotation(record, now, max(0, grace_s) * 1000),
                "rotated_at": now,
            },
        )
        await self.redis.hdel(space.record, *previous_secrets.LEGACY_FIELDS)  # folded in
        return token, record_to_json(await self.get_record(key_id) or record)

    async def authenticate(self, token: str) -> dict[str, str] | None:
        """The record of an active, well-formed, matching key; None otherwise.

        Used off the hot path (model list, error ordering); the image route authenticates inside
        the reserve script instead.
        """
        parsed = parse_token(token)
        if parsed is None:
            return None
        return await self.authenticate_parsed(*parsed)

    async def authenticate_parsed(self, key_id: str, presented: str) -> dict[str, str] | None:
        """Like :meth:`authenticate`, for a token already split into key_id and hash.

        Revoked and expired keys are returned too (with a matching secret), so that the caller
        can say why they are refused.
        """
        record = await self.get_record(key_id)
        if record is None:
            return None
        now = int(time.time() * 1000)
        current = hmac.compare_digest(presented, record.get("secret_hash", ""))
        previous = previous_secrets.accepts(record, presented, now)
        return record if current or previous else None
