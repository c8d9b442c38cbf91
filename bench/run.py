"""``python -m bench``: every benchmark figure, side by side, from one run.

See bench/README.md for what each scenario means. In short: load from a separate process against
`direct` (the upstream stand-in alone), `passthrough` (aiohttp server + aiohttp client, a few
lines: the ceiling of a Python proxy here) and the real `gateway` (key with a budget and an rpm
limit, metrics on), and ratios against the references measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import say
from bench.report import RESULTS, header_lines, markdown, target_lines, text_table
from bench.scenarios import run_all
from bench.stack import Stack, StackError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per throughput run")
    parser.add_argument(
        "--latency-duration", type=float, default=3.0, help="measured seconds per 1-connection run"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions of the main figures, in turns, best kept (variants: one fewer)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each window")
    parser.add_argument(
        "--inflight-duration", type=float, default=6.0, help="measured seconds, in-flight figure"
    )
    parser.add_argument("--large-rounds", type=int, default=1, help="requests per connection, large images")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--wrk",
        dest="wrk",
        action="store_true",
        default=None,
        help="add wrk cross-check rows (default: when wrk is on PATH)",
    )
    parser.add_argument("--no-wrk", dest="wrk", action="store_false")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark, profile the gateway with py-spy; the other "
        "options are then bench.profile's (python -m bench.profile --help)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json and latest.md go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--only-capacity", action="store_true", help="only the burst, large-answer and LiteLLM rows"
    )
    parser.add_argument(
        "--only-cost",
        action="store_true",
        help="only the 32- and 1-connection cost rows (direct, passthrough, gateway)",
    )
    parser.add_argument(
        "--only-workers", action="store_true", help="only the 1- and 2-worker rows (32 connections)"
    )
    parser.add_argument(
        "--only-burst", action="store_true", help="only the 10,000-call burst row and its direct"
    )
    parser.add_argument(
        "--only-large", action="store_true", help="only the 20 x 32 MB large-answer row and its direct"
    )
    parser.add_argument(
        "--only-reports",
        action="store_true",
        help="only the spend reports over 10,000 keys (bench/reports.py; a full run ends with it)",
    )
    args = parser.parse_args(argv)
    if args.wrk is None:
        args.wrk = shutil.which("wrk") is not None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--profile" in argv:  # python -m bench --profile [bench.profile's options]
        from bench import profile

        return profile.main([a for a in argv if a != "--profile"])
    args = parse_args(argv)
    if args.only_reports:
        return _spend_reports(args)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    stack = Stack(workdir)
    began = time.monotonic()
    try:
        report = run_all(args, stack)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except StackError as exc:
        say(f"bench: {exc}")
        return 2
    finally:
        stack.close()
        if args.keep:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["elapsed_s"] = round(time.monotonic() - began, 1)
    print()
    print("\n".join(header_lines(report)))
    print()
    print(text_table(report))
    print()
    print("\n".join(target_lines(report)))
    print(f"\ntook {report['elapsed_s']:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    print(f"written: {args.out / 'latest.json'}, {args.out / 'latest.md'}")
    if not any((args.only_capacity, args.only_cost, args.only_workers, args.only_burst, args.only_large)):
        _spend_reports(args)  # a full run: the spend-report scenario too
    return 1 if args.strict and not all(t["met"] for t in report["targets"]) else 0


def _spend_reports(args: argparse.Namespace) -> int:
    """A year's spend report over 10,000 keys, by team, model, day and key (bench/reports.py)."""
    from bench import reports

    say("spend reports (10,000 keys, 100 teams, a year of rollups)")
    return reports.main(["--out", str(args.out)])
