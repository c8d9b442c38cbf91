"""Teams: a budget, a daily image cap and alert thresholds shared by all of a team's keys.

A team exists once it has settings or has had a key; its keys' calls are reserved against the
key's limits and the team's in one script (reserve.lua), because a team's state and its keys'
share one hash tag (store/keyspace.py). Team spend counts every key the team ever had: settle.lua
adds each charge to the team's own counters, so a revoked or rotated key's spend stays counted.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.admin.usage_report import usage_json
from gateway.money import budget, thresholds
from gateway.money.budget_fields import BudgetFields
from gateway.money.micros import micros_to_usd, usd_to_micros
from gateway.money.periods import Periods
from gateway.store.keyspace import TEAM_REGISTRY, TeamSpace
from gateway.store.protocol import Redis

TEAM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_PERIOD = "month"

def check_team_name(value: str) -> str:
    """Letters, digits, ``_ . -``: a team's name goes into a Redis hash tag and into URLs.

    Matched whole (``fullmatch``): an anchored ``re.match`` lets ``$`` match before a final
    newline, and ``design\n`` became a look-alike team with a budget of its own."""
    if not TEAM_NAME_RE.fullmatch(value):
        raise ValueError("team must be 1-64 letters, digits, '_', '.' or '-'")
    return value


class TeamSettings(BudgetFields):
    """``PUT /admin/v1/teams/{team}``: the fields given change, ``null`` clears one."""


def settings_fields(spec: TeamSettings) -> tuple[dict[str, str | int], list[str]]:
    """The settings hash fields to set, and those to delete (a ``null`` given)."""
    values: dict[str, str | int] = {}
    cleared: list[str] = []
    given = spec.model_fields_set
    if "budget_usd" in given:
        if spec.budget_usd is None:
            cleared.append("budget_micros")
        else:
            values["budget_micros"] = usd_to_micros(spec.budget_usd)
    if "budget_period" in given:
        values["budget_period"] = spec.budget_period or DEFAULT_PERIOD
    if "images_per_day" in given:
        if spec.images_per_day is None:
            cleared.append("images_per_day")
        else:
            values["images_per_day"] = spec.images_per_day
    if "alert_thresholds" in given:
        if spec.alert_thresholds:
            values["alert_thresholds"] = thresholds.stored(thresholds.parse_list(spec.alert_thresholds))
        else:
            cleared.append("alert_thresholds")
    return values, cleared


def settings_json(team: str, raw: dict[bytes, bytes], keys: int) -> dict[str, Any]:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    budget_micros = int(fields.get("budget_micros", "-1"))
    images = int(fields.get("images_per_day", "-1"))
    return {
        "object": "team",
        "team": team,
        "budget_usd": micros_to_usd(budget_micros) if budget_micros >= 0 else None,
        "budget_period": fields.get("budget_period", DEFAULT_PERIOD),
        "images_per_day": images if images >= 0 else None,
        "alert_thresholds": thresholds.shown(fields.get("alert_thresholds")),
        "keys": keys,
    }


class TeamStore:
    """Team settings in Redis, for the admin API, the CLI and the console."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def names(self) -> list[str]:
        return sorted(t.decode() for t in await self.redis.smembers(TEAM_REGISTRY))

    async def exists(self, team: str) -> bool:
        return bool(await self.redis.sismember(TEAM_REGISTRY, team))

    async def configured(self, team: str) -> bool:
        """Whether the team's settings were ever set (clearing a field leaves the others)."""
        return bool(await self.redis.hgetall(TeamSpace(team).settings))

    async def set(self, team: str, spec: TeamSettings) -> dict[str, Any]:
        check_team_name(team)
        values, cleared = settings_fields(spec)
        space = TeamSpace(team)
        await self.redis.sadd(TEAM_REGISTRY, team)
        if values:
            await self.redis.hset(space.settings, mapping=values)
        if cleared:
            await self.redis.hdel(space.settings, *cleared)
        return await self.get(team)

    async def get(self, team: str) -> dict[str, Any]:
        space = TeamSpace(team)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(space.settings)
        pipe.scard(space.keys)
        raw, keys = await pipe.execute()
        return settings_json(team, raw, int(keys))

    async def list(self) -> list[dict[str, Any]]:
        """Every team's settings and its budget use now (``usage``: as ``GET .../usage`` answers)."""
        teams = []
        for team in await self.names():
            usage = await self.usage(team)
            del usage["team"]
            teams.append({**await self.get(team), "usage": usage})
        return teams

    async def usage(self, team: str) -> dict[str, Any]:
        """Exactly the shape of a key's usage (admin/usage_report.py), for the team's budget."""
        used = await budget.team_usage(self.redis, TeamSpace(team), Periods.now())
        return {"team": team, **usage_json(used)}
