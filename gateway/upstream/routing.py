"""Which channel a call goes to, and when it may move on to the next one.

**Choice.** A call goes to a channel of the lowest priority that serves its model and does not
rest (gateway/upstream/rest.py), chosen by weight among those of that priority; the others of
that priority follow in weighted order, then the next priority's. A channel on probation (its
rest over) takes its place in that order, but only for the one call that claims its test.
Resting channels come last: they are tried only when no other channel could take the call (as a
load balancer's "panic" routing does), so a gateway whose channels all rest still calls them,
exactly as a gateway of one upstream always did, rather than refusing every call for a cooldown.

**Failover.** A call moves to the next channel only when the attempt cannot have produced a
billable image (:func:`judge_failure`, :func:`judge_status`):

- nothing was sent: the connection was refused or unreachable, TLS failed, or it was not open
  within the connect timeout;
- the upstream refused the call before generating: 429 (rate limited; nothing is made), 401 and
  403 (this channel's key is refused), 402 (this channel's balance is short): the upstream's
  documented refusals, which bill nothing. A 401/402/403 also rests the channel at once: a bad key
  or an empty balance does not mend itself in seconds, and every call would pay the round trip;
- 500, 502, 503 or 504 *with the upstream's error envelope* (``{"error": ...}``): the upstream's
  own application answered that it failed, and it bills only images it returns. The same status
  without the envelope is a proxy's page in front of it (a 502/504 when the proxy gave up
  waiting), while the upstream may still be generating: it is not moved on, and is reconciled.

It never moves on once the request may have been generated: a timeout after the request was
written, a connection dropped after it, an unreadable answer, any 200. That is the caller's error
as before, the record flagged for reconciliation, and no second upstream call. Other statuses
(400 and content safety, 404, 409, 413, 422) are the caller's request, the same on any channel.

Every attempt runs within the call's one deadline (``GATEWAY_UPSTREAM_TIMEOUT_S`` from the first),
which is what the call's reservation is sized for; a next channel is tried only with
:data:`MIN_ATTEMPT_S` left.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import orjson

from gateway.core import metrics
from gateway.core.errors import GatewayError
from gateway.core.secret_mask import Secrets
from gateway.core.settings import Settings
from gateway.store.protocol import Redis
from gateway.upstream.channels import ChannelSpec, channels_of
from gateway.upstream.client import KEEPALIVE_S, READ_CHUNK_BYTES, UpstreamClient
from gateway.upstream.failures import UpstreamFailure, map_error_reply
from gateway.upstream.http1 import H1Transport
from gateway.upstream.reply import UpstreamReply
from gateway.upstream.rest import PROBATION, READY, RESTING, RestBoard

MIN_ATTEMPT_S = 1.0  # a next channel is not tried with less of the call's time left
REST_AT_ONCE = {401: "auth", 402: "insufficient_balance", 403: "auth"}
REFUSED_BEFORE_GENERATING = frozenset({401, 402, 403, 429})
FAILED_WITH_ENVELOPE = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class Judgement:
    """What one attempt's end means: whether the call may move on, and for the channel's health.

    ``healthy``: the channel answered properly (True), failed (False), or it is not known yet
    (None: a 200 whose body is still to be read; the call's end says). ``rest_s``: rest at once.
    """

    outcome: str
    error: GatewayError | None
    fail_over: bool
    healthy: bool | None
    reconcile: bool = False
    rest_s: float | None = None


def judge_failure(failure: UpstreamFailure) -> Judgement:
    """No answer came: move on only if the request was never sent."""
    if not failure.sent:
        return Judgement(failure.reason, failure.error, fail_over=True, healthy=False)
    healthy = True if failure.reason == "too_large" else False  # a large answer is an answer
    return Judgement(failure.reason, failure.error, False, healthy, reconcile=failure.reconcile)


def judge_status(reply: UpstreamReply, redact: Any, cooldown_s: float) -> Judgement:
    """An error status, its body read: move on only on a refusal that bills nothing."""
    outcome, error = map_error_reply(reply, redact)
    status = reply.status
    if status in REFUSED_BEFORE_GENERATING:
        rest_s = cooldown_s if status in REST_AT_ONCE else float(error.retry_after_s or 1)
        return Judgement(outcome, error, fail_over=True, healthy=False, rest_s=rest_s)
    if status in FAILED_WITH_ENVELOPE and has_error_envelope(reply.body):
        return Judgement(outcome, error, fail_over=True, healthy=False)
    if status >= 500:  # not the upstream's own envelope: it may still be generating behind a proxy
        return Judgement(outcome, error, fail_over=False, healthy=False, reconcile=True)
    return Judgement(outcome, error, fail_over=False, healthy=True)


def has_error_envelope(body: bytes) -> bool:
    """Whether an answer's body is the upstream's error envelope, ``{"error": {...}}`` (or a text)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    error = document.get("error") if isinstance(document, dict) else None
    return isinstance(error, dict | str) and bool(error)


# What a 200's call ended as (call.upstream_outcome) says of the channel that gave it.
FAILED_BODIES = frozenset({"bad_response", "stream_broken", "stream_stalled", "timeout"})


class Channel:
    """A configured channel and the client that calls it."""

    def __init__(self, spec: ChannelSpec, client: UpstreamClient) -> None:
        self.spec, self.client, self.name = spec, client, spec.name

    def body_for(self, body: bytes, model: str) -> bytes:
        """The caller's body, with the channel's own name of the model if it has one (the body is
        otherwise sent byte for byte)."""
        mapped = self.spec.model_map.get(model)
        if mapped is None or mapped == model:
            return body
        document = orjson.loads(body)
        document["model"] = mapped
        return orjson.dumps(document)

    def unit_cost_micros(self, model: str) -> int | None:
        return self.spec.cost_micros.get(model)


class Router:
    """The channels of this process, their order for a model, and what their attempts found."""

    def __init__(
        self,
        channels: Sequence[Channel],
        board: RestBoard,
        timeout_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.channels, self.board, self.timeout_s = tuple(channels), board, timeout_s
        self._names = frozenset(channel.name for channel in self.channels)
        self._rng = rng or random.Random()

    @property
    def names(self) -> list[str]:
        return [channel.name for channel in self.channels]

    @property
    def mask(self) -> Secrets:
        """Every channel's key: each is masked in whatever any channel answers."""
        return self.channels[0].client.mask if self.channels else Secrets(())

    def serving(self, model: str) -> list[Channel]:
        return [channel for channel in self.channels if channel.spec.serves(model)]

    def order(self, model: str) -> tuple[list[Channel], list[Channel]]:
        """The channels a call of ``model`` may try, in turn, by priority and by weight within
        one: those not resting, then, as a last resort, those resting."""
        serving = self.serving(model)
        first = [c for c in serving if self.board.state(c.name) != RESTING]
        return self._by_priority(first), self._by_priority([c for c in serving if c not in first])

    def _by_priority(self, channels: list[Channel]) -> list[Channel]:
        if len(channels) < 2:  # one channel, the gateway without a channels file: nothing to draw
            return channels
        ordered: list[Channel] = []
        for _, group in groupby(
            sorted(channels, key=lambda c: c.spec.priority), key=lambda c: c.spec.priority
        ):
            # Weighted order without replacement (Efraimidis-Spirakis): each draws u^(1/weight)
            # and the largest goes first, so the first of a priority is chosen by weight.
            keyed = [(self._rng.random() ** (1 / c.spec.weight), c) for c in group]
            ordered += [c for _, c in sorted(keyed, key=lambda pair: -pair[0])]
        return ordered

    async def admit(self, channel: Channel) -> bool:
        """Whether a call may go to ``channel`` in its turn: it is ready, or this call claims the
        live call that tests it after its rest (else it waits with the resting ones)."""
        state = self.board.state(channel.name)
        if state == READY:
            return True
        return state == PROBATION and await self.board.claim_probe(channel.name)

    def judged(self, channel: Channel, judgement: Judgement) -> None:
        """An attempt's end, as far as it is known, for the channel's health."""
        if judgement.healthy is True:
            self.board.succeeded(channel.name)
        elif judgement.healthy is False:
            self.board.failed(channel.name, judgement.outcome, judgement.rest_s)

    def ended(self, name: str, outcome: str | None) -> None:
        """A call whose channel answered 200 has ended as ``outcome``: its health."""
        if outcome is not None and name in self._names:
            if outcome in FAILED_BODIES:
                self.board.failed(name, outcome)
            else:
                self.board.succeeded(name)

    def refusal(self, model: str) -> GatewayError:
        """The error of a call of a priced model that no channel serves (checked before reserve)."""
        return GatewayError(
            503,
            f"No upstream channel of this gateway serves model '{model}'; its operators can add it "
            "to a channel's models.",
            "server_error",
            "no_channel_available",
            retry=False,
            reason="no_channel",
        )

    def export_state(self, models: Iterable[str]) -> None:
        """The resting gauges, as this process's copy of the shared rest state has them."""
        for channel in self.channels:
            metrics.CHANNEL_RESTING.labels(channel.name).set(int(self.board.state(channel.name) == RESTING))
        for model in models:
            usable = [c for c in self.serving(model) if self.board.state(c.name) != RESTING]
            metrics.MODEL_CHANNELS.labels(model).set(len(usable))

    def start(self) -> None:
        self.board.start()

    async def aclose(self) -> None:
        await self.board.stop()
        if self.channels:
            await self.channels[0].client.aclose()  # the transport all of them share


def build_router(settings: Settings, redis: Redis) -> Router:
    """The configured channels, one transport (one connection pool) for all of them."""
    specs = channels_of(settings)
    transport = H1Transport(
        settings.upstream_max_connections, KEEPALIVE_S, read_buffer_bytes=READ_CHUNK_BYTES
    )
    mask = Secrets(spec.api_key for spec in specs)  # each channel's key, in every channel's answers

    def client(spec: ChannelSpec) -> UpstreamClient:
        return UpstreamClient(
            spec.url,
            spec.api_key,
            settings.upstream_timeout_s,
            settings.upstream_connect_timeout_s,
            max_response_bytes=settings.max_upstream_response_bytes,
            transport=transport,
            mask=mask,
        )

    channels = [Channel(spec, client(spec)) for spec in specs]
    board = RestBoard(
        redis,
        threshold=settings.channel_failures,
        cooldown_s=settings.channel_cooldown_s,
        probe_ttl_s=settings.upstream_timeout_s + 5,
    )
    return Router(channels, board, settings.upstream_timeout_s)
