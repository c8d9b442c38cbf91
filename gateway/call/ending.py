"""When a call whose answer is relayed ends: after its body, once, through one hook.

A buffered answer's call ends when the route has it (gateway/routes/images.py ends it there). A
relayed one, :class:`Relayed` (a large JSON answer, gateway/call/relay.py; server-sent events,
gateway/call/stream.py), is sent while the upstream's answer still arrives: its call ends when
that body has ended, however it ended (whole, cut, the caller gone, a fault). Whoever must act
then asks :meth:`Relayed.then`; each ending runs once, in the order asked, with whether the
caller got the whole answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.responses import Response

log = logging.getLogger("gateway")

Ending = Callable[[bool], Coroutine[Any, Any, None]]  # whole: the caller got the whole answer
LATE: set[asyncio.Task[None]] = set()  # endings asked for after the end: kept alive while they run


class Relayed(Response):
    """A response that relays the upstream's answer as it arrives; its call ends after its body.

    ``failure``: the unexpected exception that ended it, if one did (the route answers for it as
    for any other: a 500, counted and logged).
    """

    _endings: tuple[Ending, ...] = ()
    _whole: bool | None = None  # set once it has ended
    failure: BaseException | None = None

    def then(self, ending: Ending) -> None:
        """Run ``ending`` once this answer's body has ended (at once if it has)."""
        if self._whole is None:
            self._endings = (*self._endings, ending)
            return
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(ending(self._whole))
        LATE.add(task)
        task.add_done_callback(LATE.discard)

    async def ended(self, whole: bool) -> None:
        """The body has ended: run the endings (the subclass calls this once, whatever happened)."""
        if self._whole is not None:
            return
        self._whole = whole
        for ending in self._endings:
            try:
                await ending(whole)
            except Exception:  # one ending's fault must not keep the next from running
                log.exception("ending a relayed answer")
