"""Every Redis key name the gateway uses, in one place.

A team and all of its keys' state share the hash tag ``{team:<team>}``: one Lua script can then
reserve against a key's limits and its team's budget in one atomic step, and settle both, on a
single server, Sentinel and Redis Cluster alike (every script touches one slot). The cost is that
a team's traffic lands on one Cluster slot, so on one primary: docs/team-budgets.md says what one
slot sustains.

A key's token names only its key_id, so each key also has a directory entry under its own tag,
``gw:{<key_id>}:key``, holding its team (never changes). The release before team budgets kept
the key's whole state under that tag; :mod:`gateway.layout_upgrade` moves such state once.
Global keys (registries, prices, the layout marker) are only touched by plain commands.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

PREFIX = "gw"
KEY_REGISTRY = f"{PREFIX}:keys"  # set of every key_id ever issued
TEAM_REGISTRY = f"{PREFIX}:teams"  # set of every team that has settings or has had a key
PRICES = f"{PREFIX}:prices"  # hash model -> unit price in micro-USD per image
PRICE_HISTORY = f"{PREFIX}:prices:history"  # list of JSON price changes, oldest first
PRICE_FILE_APPLIED = f"{PREFIX}:prices:applied"  # hash model -> price last applied from config
DEMO_KEY = f"{PREFIX}:demo-key"  # key_id of the key `make run` issued last
STORE_ID = f"{PREFIX}:store-id"  # a random id naming this store; spooled settlements carry it
LAYOUT = f"{PREFIX}:layout"  # "2": per-key state lives under its team's tag (admin/layout_upgrade.py)
LAYOUT_LOCK = f"{PREFIX}:layout:lock"  # held by the one process running the upgrade
# Set of teams whose outbox may hold alerts: Settler adds a team after settle.lua queued one, the
# sender drops it once the outbox is empty (a lost add is found by the sender's full sweep).
ALERT_TEAMS = f"{PREFIX}:alerts:teams"
ALERT_SENDER_LOCK = f"{PREFIX}:alerts:sender"  # the one process that POSTs alerts (alerts/leader.py)
# Hash of the named admin credentials (admin/access.py): ``id:<id>`` -> record, ``name:<name>`` -> id.
ACCESS = f"{PREFIX}:access"
# Stream of audit entries, every change by whom and through what (admin/audit.py), trimmed by age.
AUDIT = f"{PREFIX}:audit"
# Prefix of the console's single sign-on flows in progress (console/sso.py): state -> nonce, verifier.
OIDC_FLOW = f"{PREFIX}:oidc-flow"
# Prefix of the markers that limit how often the root token's reads are audited (admin/audit.py).
ROOT_USE = f"{PREFIX}:admin-token-used"
# The upstream channels' rest state, shared by every replica (upstream/rest.py), under one hash tag
# so that its script runs on Redis Cluster: the channels resting (hash name -> "<until_ms>:<reason>",
# kept past its end until a live call succeeds), failures in a row (hash name -> count), and the
# one live call testing a channel whose rest is over (``channel_probe``, expiring).
CHANNELS_TAG = f"{PREFIX}:{{channels}}"
CHANNEL_RESTS = f"{CHANNELS_TAG}:rests"
CHANNEL_FAILURES = f"{CHANNELS_TAG}:failures"


def channel_probe(channel: str) -> str:
    """String, expiring: held by the one call testing ``channel`` after its rest."""
    return f"{CHANNELS_TAG}:probe:{channel}"


def directory_entry(key_id: str) -> str:
    """Hash ``{team}``: which team a key belongs to (the legacy full record before the upgrade)."""
    return f"{PREFIX}:{{{key_id}}}:key"


@dataclass(frozen=True)
class TeamSpace:
    """The names of one team's own Redis state (its keys' state shares the tag: :class:`KeySpace`)."""

    team: str

    @functools.cached_property
    def tag(self) -> str:
        return f"{PREFIX}:{{team:{self.team}}}"

    @property
    def settings(self) -> str:
        """Hash: budget_micros, budget_period, images_per_day, alert_thresholds (-1/"": none)."""
        return f"{self.tag}:settings"

    @property
    def state(self) -> str:
        """Hash: micro-USD and images reserved by the team's calls in flight."""
        return f"{self.tag}:state"

    @property
    def reservation_deadlines(self) -> str:
        """Sorted set: ``<key_id>/<request_id>`` scored by when that reservation is presumed orphaned."""
        return f"{self.tag}:resx"

    @property
    def keys(self) -> str:
        """Set of the key_ids the team ever had (revoked ones included)."""
        return f"{self.tag}:keys"

    def spent(self, period_id: str) -> str:
        """Counter of micro-USD spent by all the team's keys: ``d2026-11-25``, ``m2026-11``, ``total``."""
        return f"{self.tag}:spent:{period_id}"

    def images(self, day: str) -> str:
        return f"{self.tag}:images:{day}"

    def rollup(self, day: str) -> str:
        """Hash ``<model>|<what>`` (calls, images, spend, failed, margin; ``<model>\\x1e<channel>``
        for a channel but the default one) for one UTC day: reports by team, model, day or
        channel read only these, so they do not grow with the keys ever issued."""
        return f"{self.tag}:rollup:{day}"

    def key_rollup(self, day: str) -> str:
        """Hash ``<key_id>|<what>|<model>`` for one UTC day: reports by key."""
        return f"{self.tag}:keyroll:{day}"

    def users(self, day: str) -> str:
        """Hash ``<key_id>|<what>|<model>\\x1f<user>`` for the calls of one day that named a user."""
        return f"{self.tag}:users:{day}"

    def alerted(self, scope: str, period_id: str) -> str:
        """Set of the thresholds already alerted for a scope (``team`` or ``key:<id>``) and period."""
        return f"{self.tag}:alerted:{scope}:{period_id}"

    def exhausted(self, scope: str, period_id: str) -> str:
        """String: the budget (micro-USD) a scope (``team`` or ``key:<id>``) had when it refused a
        call in this period with less than one image left (reserve.lua writes it, with a TTL)."""
        return f"{self.tag}:exhausted:{scope}:{period_id}"

    @property
    def outbox(self) -> str:
        """Sorted set: alert id scored by the time of its next delivery attempt."""
        return f"{self.tag}:outbox"

    @property
    def outbox_bodies(self) -> str:
        """Hash: alert id -> the JSON body to POST; ``<id>:attempts`` -> attempts so far."""
        return f"{self.tag}:outbox:bodies"


@dataclass(frozen=True)
class KeySpace:
    """The names of one team key's Redis state, under its team's hash tag."""

    key_id: str
    team: str

    @property
    def team_space(self) -> TeamSpace:
        return _team_space(self.team)

    @functools.cached_property
    def tag(self) -> str:
        return f"{self.team_space.tag}:key:{self.key_id}"

    @property
    def record(self) -> str:
        return f"{self.tag}:record"

    @property
    def state(self) -> str:
        """Hash: reserved micro-USD, reserved images, in-flight count, GCRA time."""
        return f"{self.tag}:state"

    @property
    def reservations(self) -> str:
        """Hash: request id -> reservation."""
        return f"{self.tag}:res"

    @property
    def cancelled(self) -> str:
        """Sorted set of request ids whose reserve timed out (their caller was told 503), by time."""
        return f"{self.tag}:cancelled"

    @property
    def settled(self) -> str:
        """Sorted set of recently settled request ids, so a replayed settlement counts once."""
        return f"{self.tag}:settled"

    @property
    def ledger(self) -> str:
        """Stream of usage records."""
        return f"{self.tag}:ledger"

    def spent(self, period_id: str) -> str:
        """Counter of micro-USD spent in a period: ``d2026-11-25``, ``m2026-11`` or ``total``."""
        return f"{self.tag}:spent:{period_id}"

    def images(self, day: str) -> str:
        return f"{self.tag}:images:{day}"

    def idempotency(self, idempotency_key_hash: str) -> str:
        return f"{self.tag}:idem:{idempotency_key_hash}"


@dataclass(frozen=True)
class LegacyKeySpace:
    """Where the release before team budgets kept a key's state: all under ``{key_id}``.

    Read only by :mod:`gateway.layout_upgrade`.
    """

    key_id: str

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{{self.key_id}}}"

    @property
    def record(self) -> str:
        return directory_entry(self.key_id)

    @property
    def pattern(self) -> str:
        """Every name the legacy layout used for this key (SCAN MATCH)."""
        return f"{self.tag}:*"


@functools.lru_cache(maxsize=4096)
def _team_space(team: str) -> TeamSpace:
    """One TeamSpace per team, its tag built once: every call names its team's keys twice (the
    request path's KeySpace is new each call, so a per-instance cache alone would not last)."""
    return TeamSpace(team)
