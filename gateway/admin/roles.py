"""Who is asking, what their role lets them do, and which teams they see.

Three roles (docs/access.md):

- ``admin``: everything, access management included. The root ``GATEWAY_ADMIN_TOKEN`` (the
  break-glass credential) is an admin.
- ``finance``: reads everything an admin can read (keys, teams, usage, reports, exports, prices,
  the audit trail) and sets team budgets (a team's settings: budget, period, daily image cap,
  alert thresholds); nothing else.
- ``team-admin`` of a list of teams: issues, updates, rotates and revokes keys of those teams;
  sees keys, usage, reports and exports of those teams only, as if no other team existed.

A :class:`Principal` is what authentication yields, whatever the credential (root token, named
credential, console session, single sign-on, the CLI). Every permission check is
:meth:`Principal.require`, and every team filter is :meth:`Principal.sees` /
:meth:`Principal.visible`: the one place where a role turns into a yes, a no, or fewer rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Literal

from gateway.admin.teams import TEAM_NAME_RE
from gateway.core.errors import GatewayError

Role = Literal["admin", "finance", "team-admin"]
ADMIN: Final = "admin"
FINANCE: Final = "finance"
TEAM_ADMIN: Final = "team-admin"
ROLES: tuple[Role, ...] = (ADMIN, FINANCE, TEAM_ADMIN)
ROOT_ACTOR = "admin-token"  # the audit trail's name for the root GATEWAY_ADMIN_TOKEN

Kind = Literal["root", "credential", "sso", "cli"]


class Permission(Enum):
    """What a route does, with the roles allowed to do it (in the words a refusal uses)."""

    READ = ("Reading", (ADMIN, FINANCE, TEAM_ADMIN))
    KEYS = ("Issuing and changing keys", (ADMIN, TEAM_ADMIN))
    TEAM_SETTINGS = ("Setting a team's budget", (ADMIN, FINANCE))
    PRICES = ("Changing prices", (ADMIN,))
    ACCESS = ("Managing access", (ADMIN,))
    AUDIT = ("Reading the audit trail", (ADMIN, FINANCE))

    @property
    def doing(self) -> str:
        doing: str = self.value[0]
        return doing

    @property
    def roles(self) -> tuple[str, ...]:
        roles: tuple[str, ...] = self.value[1]
        return roles


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, message, "invalid_request_error", "insufficient_role", retry=False)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its audit name, role, teams (team-admin) and how it came in."""

    actor: str
    role: Role
    kind: Kind
    via: str = "api"
    teams: frozenset[str] = field(default_factory=frozenset)
    credential_id: str = ""  # a named credential's id: sessions made with it die with it
    expires_at_ms: int = 0  # a named credential's expiry (0: never): its sessions end by then

    def require(self, permission: Permission) -> None:
        """403 naming the role needed unless this role may do ``permission``."""
        if self.role not in permission.roles:
            needed = " or ".join(permission.roles)
            raise forbidden(
                f"{permission.doing} needs the role {needed}; this credential has the role {self.role}."
            )

    def require_team(self, permission: Permission, team: str) -> None:
        """Like :meth:`require`, and a team-admin only for its own teams."""
        self.require(permission)
        if not self.sees(team):
            raise forbidden(
                f"{permission.doing} for team '{team}' needs the role admin, or team-admin of '{team}'; "
                f"this credential is team-admin of {', '.join(sorted(self.teams))}."
            )

    @property
    def scoped(self) -> bool:
        """True when this caller sees only some teams."""
        return self.role == TEAM_ADMIN

    def sees(self, team: str) -> bool:
        return not self.scoped or team in self.teams

    def visible(self, teams: Iterable[str]) -> list[str]:
        """``teams`` less those this caller may not see, in their order."""
        return [team for team in teams if self.sees(team)]

    @property
    def team_filter(self) -> frozenset[str] | None:
        """The teams a report or export may read: None for every team."""
        return self.teams if self.scoped else None

    def scope(self, team: str | None) -> list[str] | None:
        """The teams a read covers: the one asked for (none if this caller may not see it, as if it
        did not exist) or every team this caller sees; None: every team there is."""
        if team is not None:
            return [team] if self.sees(team) else []
        return None if not self.scoped else sorted(self.teams)

    def as_json(self) -> dict[str, Any]:
        """Who, the role, its teams, and what it may do (the console shows only what it may do)."""
        return {
            "actor": self.actor,
            "role": self.role,
            "teams": sorted(self.teams) if self.scoped else None,
            "permissions": [p.name.lower() for p in Permission if self.role in p.roles],
        }


def root(via: str) -> Principal:
    return Principal(ROOT_ACTOR, ADMIN, "root", via)


def role_from_groups(groups: Iterable[str], prefix: str) -> tuple[Role, frozenset[str]] | None:
    """The role a person's groups at the identity provider grant, or None for no access.

    ``{prefix}admin`` beats ``{prefix}finance``, which beats ``{prefix}team-admin:<team>`` (one
    group per team; a malformed team name grants nothing).
    """
    names = set(groups)
    if f"{prefix}{ADMIN}" in names:
        return ADMIN, frozenset()
    if f"{prefix}{FINANCE}" in names:
        return FINANCE, frozenset()
    marker = f"{prefix}{TEAM_ADMIN}:"
    teams = frozenset(
        name[len(marker) :]
        for name in names
        if name.startswith(marker) and TEAM_NAME_RE.fullmatch(name[len(marker) :])
    )
    if teams:
        return TEAM_ADMIN, teams
    return None
