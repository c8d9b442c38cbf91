"""Many independent Redis commands in a few round trips: pipelines of bounded size.

Non-transactional: the keys live in many slots, which a Cluster pipeline allows and a MULTI
does not. Used by reports, listings and the budget gauge, which read one small thing per key,
team or day.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

PIPELINE_CHUNK = 1000  # commands per pipeline round trip: bounded memory, few round trips


async def pipelined(
    redis: Any, commands: Iterable[tuple[T, tuple[Any, ...]]], **options: Any
) -> AsyncIterator[tuple[T, Any]]:
    """Run ``(tag, (method, *args))`` commands in pipelines of bounded size; yield (tag, result).

    Results are handed on batch by batch, never all held at once.
    """
    batch: list[tuple[T, tuple[Any, ...]]] = []
    for command in commands:
        batch.append(command)
        if len(batch) == PIPELINE_CHUNK:
            for item in await run_batch(redis, batch, options):
                yield item
            batch = []
    if batch:
        for item in await run_batch(redis, batch, options):
            yield item


async def run_batch(
    redis: Any, batch: list[tuple[T, tuple[Any, ...]]], options: dict[str, Any]
) -> list[tuple[T, Any]]:
    async with redis.pipeline(transaction=False) as pipe:
        for _, (method, *args) in batch:
            getattr(pipe, method)(*args, **options)
        results = await pipe.execute()
    return [(tag, result) for (tag, _), result in zip(batch, results, strict=True)]
