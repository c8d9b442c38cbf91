"""One page of the key list: sorted by team and name, searched, without reading every record.

Listing 10,000 keys whole (every record, and in the console every key's usage) answered 3 MB and
more in seconds. A page needs only the order: the team's key sets give (team, key_id) with no
directory look-up, one HGET per key gives its name, and then only the page's records are read
whole. Used by ``GET /admin/v1/keys`` and the console's Keys page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.admin.keys import record_to_json
from gateway.store.keyspace import KeySpace, TeamSpace
from gateway.store.pipelined import pipelined
from gateway.store.protocol import text
from gateway.store.registry import registered_teams

DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 1000


@dataclass(frozen=True)
class KeyPage:
    """The keys of one page (as the admin API shows a key) and where the page stands."""

    data: list[dict[str, Any]]
    total: int  # keys that match, on every page
    page: int
    per_page: int

    @property
    def has_more(self) -> bool:
        return self.page * self.per_page < self.total

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": self.data,
            "total": self.total,
            "page": self.page,
            "per_page": self.per_page,
            "has_more": self.has_more,
        }


def matches(search: str, team: str, name: str, key_id: str) -> bool:
    """Case-insensitive: part of the key's name or team, or the start of its key_id."""
    return search in name.lower() or search in team.lower() or key_id.startswith(search)


async def key_page(
    redis: Any,
    *,
    teams: Sequence[str] | None = None,
    search: str | None = None,
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
) -> KeyPage:
    """Keys (of ``teams``, default every team's; matching ``search``) in team, name, key_id order;
    page ``page`` of them."""
    listed_teams = list(teams) if teams is not None else await registered_teams(redis)
    members = ((t, ("smembers", TeamSpace(t).keys)) for t in listed_teams)
    owned = [(t, text(k)) async for t, ids in pipelined(redis, members) for k in ids]
    names = ((pair, ("hget", KeySpace(pair[1], pair[0]).record, "name")) for pair in owned)
    listed = [(t, text(name), k) async for (t, k), name in pipelined(redis, names) if name is not None]
    wanted = (search or "").strip().lower()
    if wanted:
        listed = [entry for entry in listed if matches(wanted, *entry)]
    listed.sort(key=lambda entry: (entry[0], entry[1].lower(), entry[1], entry[2]))
    start = (page - 1) * per_page
    chosen = listed[start : start + per_page]
    records = ((k, ("hgetall", KeySpace(k, t).record)) for t, _, k in chosen)
    data = [
        record_to_json({text(f): text(v) for f, v in raw.items()})
        async for _, raw in pipelined(redis, records)
        if raw
    ]
    return KeyPage(data, len(listed), page, per_page)
