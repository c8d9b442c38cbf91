"""Named admin credentials with a role: grant, list, revoke, authenticate.

A credential's token looks like ``gw-cred-<id>_<secret>``: the id is public (it finds the
record), the secret is 256 random bits shown once, and Redis keeps only the SHA-256 of the whole
token, as for team keys (admin/keys.py says why a plain hash is right for a secret of that entropy).

Everything lives in one plain hash, ``gw:access``: ``id:<id>`` holds a credential's record (JSON),
``name:<name>`` the id of the credential that holds that name now. Claiming a name is one HSETNX,
so two grants of the same name cannot both win; revoking releases it. Nothing is cached in a
process: every request reads the record, so a revocation bites at once on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.admin.keys import new_key_id
from gateway.admin.roles import TEAM_ADMIN, Principal, Role
from gateway.admin.teams import check_team_name
from gateway.store.keyspace import ACCESS
from gateway.store.protocol import Redis

TOKEN_PREFIX = "gw-cred-"
_TOKEN_RE = re.compile(r"gw-cred-([a-z2-7]{12})_([A-Za-z0-9_-]{43})")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")  # matched whole (fullmatch)


class CredentialSpec(BaseModel):
    """``POST /admin/v1/access``: a name people recognise, a role, its teams, an optional expiry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Letters, digits and _ . @ + -, e.g. alice@example.com or ci-reports.")
    role: Role = Field(description="admin, finance or team-admin.")
    teams: list[str] | None = Field(default=None, description="team-admin only: the teams it manages.")
    expires_at: AwareDatetime | None = Field(
        default=None, description="ISO 8601 with its offset, e.g. 2027-01-31T18:00:00+01:00; null: never."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("name must be 1-100 letters, digits, '_', '.', '@', '+' or '-'")
        return value

    @field_validator("teams")
    @classmethod
    def _teams(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted({check_team_name(team) for team in value})

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.timestamp() <= time.time():
            raise ValueError("expires_at must be in the future")
        return value

    @model_validator(mode="after")
    def _teams_for_team_admin(self) -> CredentialSpec:
        if self.role == TEAM_ADMIN and not self.teams:
            raise ValueError("a team-admin credential needs at least one team")
        if self.role != TEAM_ADMIN and self.teams:
            raise ValueError(f"only a team-admin credential has teams; {self.role} sees every team")
        return self


class NameTaken(Exception):
    """A credential that is not revoked already has this name."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(token: str) -> str | None:
    """The credential id of a well-formed credential token, else None."""
    match = _TOKEN_RE.fullmatch(token)
    return match.group(1) if match else None


def _iso(ms: int) -> str | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z") if ms else None


def status(record: dict[str, Any], now_ms: int | None = None) -> str:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if record.get("revoked_at_ms"):
        return "revoked"
    expires = int(record.get("expires_at_ms") or 0)
    return "expired" if expires and now_ms >= expires else "active"


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A credential as the API and the CLI show it: never its token or hash."""
    return {
        "object": "access_credential",
        "name": record["name"],
        "role": record["role"],
        "teams": record.get("teams") or None,
        "status": status(record),
        "created_at": _iso(int(record["created_at_ms"])),
        "created_by": record.get("created_by", ""),
        "expires_at": _iso(int(record.get("expires_at_ms") or 0)),
        "revoked_at": _iso(int(record.get("revoked_at_ms") or 0)),
        "last4": record.get("last4", ""),
    }


def principal_of(record: dict[str, Any], via: str) -> Principal:
    return Principal(
        record["name"],
        record["role"],
        "credential",
        via,
        frozenset(record.get("teams") or ()),
        credential_id=record["id"],
        expires_at_ms=int(record.get("expires_at_ms") or 0),
    )


class CredentialStore:
    """Named credentials in Redis, for the admin API, the console and the CLI."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def grant(self, spec: CredentialSpec, created_by: str) -> tuple[str, dict[str, Any]]:
        """A new credential: its token (shown once) and its public record. NameTaken if in use."""
        credential_id = new_key_id()
        token = f"{TOKEN_PREFIX}{credential_id}_{secrets.token_urlsafe(32)}"
        record = {
            "id": credential_id,
            "name": spec.name,
            "role": spec.role,
            "teams": spec.teams or [],
            "secret_hash": hash_token(token),
            "last4": token[-4:],
            "created_at_ms": int(time.time() * 1000),
            "created_by": created_by,
            "expires_at_ms": int(spec.expires_at.timestamp() * 1000) if spec.expires_at else 0,
            "revoked_at_ms": 0,
        }
        # The record first, the name last: until the name is claimed the token is not handed out,
        # and a lost race leaves nothing that authenticates.
        await self.redis.hset(ACCESS, f"id:{credential_id}", orjson.dumps(record))
        if not await self.redis.hsetnx(ACCESS, f"name:{spec.name}", credential_id):
            await self.redis.hdel(ACCESS, f"id:{credential_id}")
            raise NameTaken(spec.name)
        return token, public(record)

    async def record(self, credential_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(ACCESS, f"id:{credential_id}")
        return dict(orjson.loads(raw)) if raw else None

    async def list(self) -> list[dict[str, Any]]:
        """Every credential ever granted, revoked ones included, by name then creation."""
        raw = await self.redis.hgetall(ACCESS)
        records = [orjson.loads(v) for k, v in raw.items() if k.startswith(b"id:")]
        return [public(r) for r in sorted(records, key=lambda r: (r["name"], r["created_at_ms"]))]

    async def revoke(self, name: str) -> dict[str, Any] | None:
        """Revoke the credential holding ``name``, at once; None if no credential holds it."""
        credential_id = await self.redis.hget(ACCESS, f"name:{name}")
        if credential_id is None:
            return None
        record = await self.record(credential_id.decode())
        if record is None:
            return None
        record["revoked_at_ms"] = int(time.time() * 1000)
        await self.redis.hset(ACCESS, f"id:{record['id']}", orjson.dumps(record))
        await self.redis.hdel(ACCESS, f"name:{name}")  # the name may be granted again
        return public(record)

    async def authenticate(self, token: str) -> tuple[str, dict[str, Any] | None]:
        """(``"ok"``, record) for a valid token; else (``"expired"``/``"invalid"``, record or None).

        Revoked, unknown, malformed and wrong-secret tokens are all just ``invalid``: the caller
        learns nothing about which.
        """
        credential_id = parse_token(token)
        if credential_id is None:
            return "invalid", None
        record = await self.record(credential_id)
        if record is None or not hmac.compare_digest(hash_token(token), record["secret_hash"]):
            return "invalid", None
        state = status(record)
        if state == "revoked":
            return "invalid", None
        return ("expired" if state == "expired" else "ok"), record

    async def active(self, credential_id: str) -> dict[str, Any] | None:
        """The record of a credential still in force (not revoked, not expired), else None."""
        record = await self.record(credential_id)
        return record if record is not None and status(record) == "active" else None
