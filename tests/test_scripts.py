"""The Lua scripts as Redis runs them: loaded by gateway/scripts.py, errors pointing at their files."""

from __future__ import annotations

import asyncio
import re
from importlib import resources

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway import scripts
from gateway.redis_keys import KeySpace
from tests.support import RedisServer


def line_of(script: str, text: str) -> int:
    source = resources.files("gateway").joinpath("lua", script).read_text()
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def test_a_script_error_names_the_line_of_the_script_file(redis_server: RedisServer) -> None:
    space = KeySpace("linenumbers1")

    async def run() -> str:
        client = Redis.from_url(redis_server.url)
        try:
            await client.hset(space.record, mapping={"secret_hash": "h", "team": "t", "name": "n"})
            keys = [space.record, space.state, space.reservations, space.reservation_deadlines]
            keys += [space.spent("d"), space.spent("m"), space.spent("total"), space.images("d")]
            with pytest.raises(ResponseError) as failure:
                # max_images is not a number: the script fails where it first does arithmetic on it
                await scripts.RESERVE(client, keys, ["h", "m", "req", "not-a-number", 1, 1000, 2**53])
            return str(failure.value)
        finally:
            await client.aclose()

    message = asyncio.run(run())
    found = re.search(r"user_script:(\d+):", message)
    assert found is not None, message
    assert int(found.group(1)) == line_of("reserve.lua", "local amount = max_images * unit_price")


def test_the_shared_functions_are_one_line_without_comments() -> None:
    prelude = scripts.one_line(resources.files("gateway").joinpath("lua", "common.lua").read_text())
    assert "\n" not in prelude and "--" not in prelude
    assert "local function release_orphans(" in prelude
    assert scripts.RESERVE.source.count("\n") == scripts.load("reserve.lua").count("\n")
