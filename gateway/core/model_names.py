"""The one rule for model names, everywhere a name comes in: the price API, the prices file, the
CLI, and a key's ``models`` list.

A key's ``models`` are stored as ``,a,b,`` and matched by reserve.lua as a substring, and rollups
name fields ``<model>|calls``: a name holding a comma could pass as two allowed names (``a,b``
under ``["a", "b"]``), one holding ``|`` would corrupt the rollups. So a name is 1 to 128
characters: letters, digits and ``. _ - / :``, starting with a letter or digit. Deleting a price
takes any name, so a bad name stored before this rule can still be removed.
"""

from __future__ import annotations

import re

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}")
RULE = "1-128 characters: letters, digits and . _ - / :, starting with a letter or digit"


def check_model_name(name: str) -> str:
    """``name`` if it follows the rule; ValueError saying the rule otherwise."""
    if not isinstance(name, str) or MODEL_NAME.fullmatch(name) is None:
        raise ValueError(f"model name {name!r} is not valid: {RULE}")
    return name
