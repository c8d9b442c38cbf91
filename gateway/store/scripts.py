"""Every Lua script the gateway runs, and how it is loaded and called.

The scripts live in ``gateway/store/lua/``. ``common.lua`` is prepended to each as a single line, so
the line numbers in Redis' error messages are the script file's own. Scripts answer flat lists
of name, value pairs and are decoded here by name (:func:`named`), never by position.

A script runs by EVALSHA and falls back to EVAL on the key's own node when it is not cached:
redis-py's ``register_script`` reloads a missing script on every cluster primary, so one dead
primary would break keys that live elsewhere. Every script touches the keys of one hash tag only,
so it runs unchanged on Redis Cluster.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from gateway.store.protocol import Redis, RedisValue, text
from gateway.store.wire import execute

_COMMENT = re.compile(r"--.*$")


def _read(name: str) -> str:
    return resources.files("gateway.store").joinpath("lua", name).read_text(encoding="utf-8")


def one_line(source: str) -> str:
    """Lua source with comments dropped and lines joined: Lua needs no newlines between statements.

    Only for ``common.lua``, which keeps ``--`` out of its strings.
    """
    lines = (_COMMENT.sub("", line).strip() for line in source.splitlines())
    return " ".join(line for line in lines if line)


def load(name: str) -> str:
    """A script's source as sent to Redis: the shared functions, then the file, line for line."""
    return one_line(_read("common.lua")) + " " + _read(name)


class LuaScript:
    """One script, run by EVALSHA with a fallback to EVAL."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = load(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[RedisValue]) -> Any:
        try:
            return await execute(redis, "EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await execute(redis, "EVAL", self.source, len(keys), *keys, *args)


def named(reply: Sequence[Any]) -> dict[str, Any]:
    """A script's flat ``name, value, name, value`` answer as a dict; names decoded, values not."""
    return {text(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


RESERVE = LuaScript("reserve.lua")
SETTLE = LuaScript("settle.lua")
USAGE = LuaScript("usage.lua")
TEAM_USAGE = LuaScript("team_usage.lua")
ROLLUPS = LuaScript("rollups.lua")
CANCEL = LuaScript("cancel.lua")
IDEMPOTENCY_BEGIN = LuaScript("idempotency_begin.lua")
IDEMPOTENCY_COMPLETE = LuaScript("idempotency_complete.lua")
LEADER = LuaScript("leader.lua")
CHANNEL_REST = LuaScript("channel_rest.lua")
