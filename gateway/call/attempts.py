"""One call's way through the upstream channels: each attempt in turn, until one may not move on.

Both ways of calling the upstream (a generation read whole, gateway/call/forward.py; a stream,
gateway/call/stream.py) go through :func:`reach`: it tries the channels in the router's order
(gateway/upstream/routing.py), and moves on only after an attempt that cannot have produced a
billable image. What it hands back is the call's last attempt: a 200 to read on, or the failure
or error status the caller gets. Every attempt it moved on from is kept in ``call.failovers`` (the
ledger writes a record for each one that reached an upstream); the call's own fields (``channel``,
``attempt``, ``upstream_*``) describe the last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from gateway.call.log import CallLog, FailedOver
from gateway.core.errors import GatewayError
from gateway.upstream.failures import UpstreamFailure
from gateway.upstream.reply import UpstreamReply
from gateway.upstream.routing import MIN_ATTEMPT_S, Channel, Judgement, Router, judge_failure, judge_status

# Sends one attempt: (channel, the body for it, the call's deadline on the loop's clock).
Send = Callable[[Channel, bytes, float], Awaitable[UpstreamReply]]


@dataclass
class Reached:
    """The call's last attempt: a 200 (``judgement`` None) whose body is still to be read, or
    what failed (``judgement`` says what it means; ``reply`` holds an error status's body)."""

    channel: Channel
    reply: UpstreamReply | None
    judgement: Judgement | None

    @property
    def error(self) -> GatewayError:
        assert self.judgement is not None and self.judgement.error is not None
        return self.judgement.error


async def reach(router: Router, body: bytes, call: CallLog, send: Send) -> Reached:
    """Try the channels serving ``call.model`` in turn (the route checked that one does)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + router.timeout_s
    moving_on: Reached | None = None
    async with aclosing(_turns(router, call.model)) as turns:
        async for channel in turns:
            if moving_on is not None:
                if deadline - loop.time() < MIN_ATTEMPT_S:
                    break
                call.failovers.append(_failed_over(call))
            call.channel, call.attempt = channel.name, call.attempt + 1
            call.unit_cost_micros = channel.unit_cost_micros(call.model)
            call.upstream_status, call.upstream_latency_s = None, None
            reached = await _attempt(router, channel, body, call, send, deadline)
            if reached.judgement is None or not reached.judgement.fail_over:
                return reached
            moving_on = reached
    if moving_on is None:
        raise router.refusal(call.model)
    return moving_on


async def _turns(router: Router, model: str) -> AsyncGenerator[Channel, None]:
    """The channels in the order a call tries them: the router's, where a channel on probation
    whose test another call holds waits with the resting ones, tried only as a last resort."""
    first, last = router.order(model)
    passed = []
    for channel in first:
        if await router.admit(channel):
            yield channel
        else:
            passed.append(channel)
    for channel in (*passed, *last):
        yield channel


async def _attempt(
    router: Router, channel: Channel, body: bytes, call: CallLog, send: Send, deadline: float
) -> Reached:
    try:
        reply = await send(channel, channel.body_for(body, call.model), deadline)
    except UpstreamFailure as failure:
        # The status that arrived before its body failed, if any (a stalled 200 is reconciled).
        call.upstream_latency_s, call.upstream_status = failure.latency_s, failure.status
        judgement = judge_failure(failure)
        call.upstream_outcome = judgement.outcome
        router.judged(channel, judgement)
        return Reached(channel, None, judgement)
    call.upstream_status, call.upstream_latency_s = reply.status, reply.latency_s
    if reply.status == 200:  # its health is known once its body has been read (the call's end)
        return Reached(channel, reply, None)
    judgement = judge_status(reply, channel.client.redact, router.board.cooldown_s)
    call.upstream_outcome = judgement.outcome
    router.judged(channel, judgement)
    return Reached(channel, reply, judgement)


def _failed_over(call: CallLog) -> FailedOver:
    return FailedOver(
        channel=call.channel,
        attempt=call.attempt,
        outcome=call.upstream_outcome or "unknown",
        status=call.upstream_status or 0,
        latency_s=call.upstream_latency_s or 0.0,
    )
