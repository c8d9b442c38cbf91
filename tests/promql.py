"""A small PromQL reader for the tests: enough to pull the metric names, their label matchers,
the grouping labels and the functions out of an alert expression or a dashboard query.

It raises on anything it does not understand rather than guessing. Its own tests are in
tests/test_deploy_prometheus.py, beside the tests that read the shipped files with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}
FUNCTIONS = AGGREGATIONS | {
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "double_exponential_smoothing",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "ln",
    "log2",
    "log10",
    "minute",
    "month",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sort_by_label",
    "sort_by_label_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "year",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
    "mad_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "cos",
    "cosh",
    "sin",
    "sinh",
    "tan",
    "tanh",
    "deg",
    "rad",
    "pi",
    "start",
    "end",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<number>\d[\w.]*)
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[{}()\[\],=<>+\-*/%^@:])
    """,
    re.VERBOSE,
)


@dataclass
class Query:
    """What one PromQL expression refers to."""

    metrics: list[tuple[str, list[tuple[str, str, str]]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.metrics}


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            tokens.append((m.lastgroup, m.group()))
    return tokens


def _unquote(s: str) -> str:
    return s[1:-1].encode().decode("unicode_escape") if s[0] in "\"'" else s[1:-1]


def parse_promql(expr: str) -> Query:
    """Metric names with their label matchers, grouping labels and functions used in `expr`.

    Grafana variables ($__rate_interval, ${team}, ...) are accepted where PromQL takes a duration
    or inside strings.
    """
    q = Query()
    toks = tokenize(expr)
    i = 0

    def matchers(start: int) -> tuple[list[tuple[str, str, str]], int]:
        assert toks[start][1] == "{"
        out, j = [], start + 1
        while toks[j][1] != "}":
            if toks[j][1] == ",":
                j += 1
                continue
            (lk, label), (_, op), (sk, value) = toks[j], toks[j + 1], toks[j + 2]
            if lk != "ident" or op not in {"=", "!=", "=~", "!~"} or sk != "string":
                raise ValueError(f"bad label matcher near {toks[j : j + 3]} in {expr!r}")
            out.append((label, op, _unquote(value)))
            j += 3
        return out, j + 1

    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "op" and text == "[":  # range or subquery: durations only
            depth = 1
            i += 1
            while depth:
                depth += {"[": 1, "]": -1}.get(toks[i][1], 0)
                i += 1
            continue
        if kind == "op" and text == "{":  # selector without a metric name
            ms, i = matchers(i)
            names = [v for (lab, op, v) in ms if lab == "__name__" and op == "="]
            if not names:
                raise ValueError(f"selector without a plain __name__ in {expr!r}")
            q.metrics.append((names[0], [m for m in ms if m[0] != "__name__"]))
            continue
        if kind != "ident":
            i += 1
            continue
        if text in GROUPING:
            if nxt == "(":
                j = i + 2
                while toks[j][1] != ")":
                    if toks[j][0] == "ident":
                        q.grouping.add(toks[j][1])
                    j += 1
                i = j + 1
            else:
                i += 1
            continue
        if text in KEYWORDS:
            i += 1
            continue
        if nxt == "(" or (text in AGGREGATIONS and nxt in ("by", "without")):
            if text not in FUNCTIONS:
                raise ValueError(f"unknown PromQL function {text!r} in {expr!r}")
            q.functions.add(text)
            i += 1
            continue
        if nxt == "{":
            ms, i = matchers(i + 1)
        else:
            ms, i = [], i + 1
        q.metrics.append((text, ms))
    return q


def label_values_query(query: str) -> tuple[str, str] | None:
    """Grafana's `label_values(selector, label)`: the selector (PromQL) and the label."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    if not m:
        return None
    return m.group(1), m.group(2)
