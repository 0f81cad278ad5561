"""Numeric flags of every `ganserve` command are range-checked when parsed: one line naming the flag, exit code 2.

Before, `ganserve serve --port 99999` got past the parser (gRPC takes the port modulo 65536) and was refused only
after the repository check, and most other flags (streams, batch and queue sizes, tile sizes, seconds, seeds,
bench durations, client timeouts...) were not checked at all or only deep inside a run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from ganserve.core.cli_args import address
from ganserve.pipeline.cli import COMMANDS, build_parser, main

SERVE = ["serve", "--repo", "{repo}"]
CLIENT_SR = ["client", "sr", "in.png", "out.png", "--model", "m"]
BENCH = ["bench", "--repo", "{repo}", "--model", "m"]

# (argv, the flag the message must name, what it must say)
BAD = [
    (SERVE + ["--port", "99999"], "--port", "must be 0..65535, got 99999"),
    (SERVE + ["--port", "65536"], "--port", "must be 0..65535, got 65536"),
    (SERVE + ["--port", "-1"], "--port", "must be 0..65535, got -1"),  # the gRPC port cannot be off
    (SERVE + ["--port", "80a"], "--port", "expected an integer, got '80a'"),
    (SERVE + ["--http-port", "70000"], "--http-port", "must be 0..65535 (or -1 = off), got 70000"),
    (SERVE + ["--http-port", "-2"], "--http-port", "must be 0..65535 (or -1 = off), got -2"),
    (SERVE + ["--metrics-port", "65536"], "--metrics-port", "must be 0..65535 (or -1 = off), got 65536"),
    (SERVE + ["--intra-op-threads", "-1"], "--intra-op-threads", "must be >= 0, got -1"),
    (SERVE + ["--streams", "0"], "--streams", "must be >= 1, got 0"),
    (SERVE + ["--streams", "1.5"], "--streams", "expected an integer, got '1.5'"),
    (SERVE + ["--max-batch-size", "0"], "--max-batch-size", "must be >= 1, got 0"),
    (SERVE + ["--max-queue-size", "0"], "--max-queue-size", "must be >= 1, got 0"),
    (SERVE + ["--max-queue-delay-us", "-5"], "--max-queue-delay-us", "must be >= 0, got -5"),
    (SERVE + ["--tile-size", "-1"], "--tile-size", "must be >= 0 (0 = no tiling), got -1"),
    (SERVE + ["--tile-overlap", "-16"], "--tile-overlap", "must be >= 0, got -16"),
    (SERVE + ["--max-pixels", "0"], "--max-pixels", "must be >= 1, got 0"),
    (SERVE + ["--max-message-mb", "0"], "--max-message-mb", "must be 1..2047"),
    (SERVE + ["--max-message-mb", "4096"], "--max-message-mb", "must be 1..2047 (gRPC's limit is 2 GiB), got 4096"),
    (SERVE + ["--grace-seconds", "-1"], "--grace-seconds", "must be >= 0, got -1"),
    (SERVE + ["--grace-seconds", "nan"], "--grace-seconds", "expected a finite number, got 'nan'"),
    (SERVE + ["--drain-seconds", "-0.5"], "--drain-seconds", "must be >= 0, got -0.5"),
    (SERVE + ["--poll-seconds", "inf"], "--poll-seconds", "expected a finite number, got 'inf'"),
    (["client", "--server", "127.0.0.1:99999", "list"], "--server", "port must be 1..65535, got '127.0.0.1:99999'"),
    (["client", "--server", "127.0.0.1:0", "list"], "--server", "port must be 1..65535"),
    (["client", "--timeout", "0", "list"], "--timeout", "must be > 0, got 0"),
    (["client", "--timeout", "-3", "list"], "--timeout", "must be > 0, got -3"),
    (CLIENT_SR + ["--quality", "101"], "--quality", "must be 0..100 (0 = the server's default, 90), got 101"),
    (CLIENT_SR + ["--quality", "-1"], "--quality", "must be 0..100"),
    (CLIENT_SR + ["--tile-size", "-8"], "--tile-size", "must be >= 0 (0 = no tiling), got -8"),
    (CLIENT_SR + ["--tile-size", str(2**31)], "--tile-size", "must be at most 2147483647"),  # int32 on the wire
    (CLIENT_SR + ["--tile-overlap", "-1"], "--tile-overlap", "must be >= 0, got -1"),
    (["client", "classify", "in.png", "--model", "m", "--top-k", "0"], "--top-k", "must be >= 1, got 0"),
    (["client", "generate", "out.png", "--model", "m", "--seed", "-1"], "--seed", "must be 0..18446744073709551615"),
    (["client", "generate", "out.png", "--model", "m", "--seed", str(2**64)], "--seed",
     "must be 0..18446744073709551615, got 18446744073709551616"),
    (BENCH + ["--duration", "0"], "--duration", "must be > 0, got 0"),
    (BENCH + ["--requests", "0"], "--requests", "must be >= 1, got 0"),
    (BENCH + ["--concurrency", "1,0"], "--concurrency", "each must be >= 1, got '1,0'"),
    (BENCH + ["--sizes", "64,x"], "--sizes", "expected comma-separated integers, got '64,x'"),
    (BENCH + ["--batch", "-1"], "--batch", "each must be >= 1"),
    (["demo", "--examples", "0"], "--examples", "must be >= 1, got 0"),
    (["demo", "--bench-requests", "-2"], "--bench-requests", "must be >= 1, got -2"),
    (["demo", "--train-minutes", "0"], "--train-minutes", "must be > 0, got 0"),
    (["train", "srresnet", "--steps", "-1"], "--steps", "must be >= 0, got -1"),
    (["train", "srresnet", "--budget-minutes", "-1"], "--budget-minutes", "must be > 0, got -1"),
    (["train", "srresnet", "--budget-minutes", "nan"], "--budget-minutes", "expected a finite number"),
    (["train", "srresnet", "--seed", "-7"], "--seed", "must be >= 0, got -7"),  # numpy's SeedSequence refuses < 0
]


def _argv(argv: list[str], tmp_path: Path) -> list[str]:
    return [a.format(repo=tmp_path) for a in argv]


@pytest.mark.parametrize("argv, flag, says", BAD, ids=[f"{a[0]} {f} {a[a.index(f) + 1] if f in a else ''}"
                                                       for a, f, _ in BAD])
def test_bad_numeric_flags_are_refused_by_the_parser(argv: list[str], flag: str, says: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:  # refused while parsing: the command itself never runs
        main(_argv(argv, tmp_path))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert exc.value.code == 2 and captured.out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ganserve {argv[0]}") and f": error: argument {flag}: {says}" in err, err


@pytest.mark.parametrize("argv, want", [
    (SERVE + ["--port", "0", "--http-port", "-1", "--metrics-port", "-1"], {"port": 0, "http_port": -1,
                                                                              "metrics_port": -1}),
    (SERVE + ["--port", "65535", "--http-port", "0", "--metrics-port", "65535"], {"port": 65535, "http_port": 0,
                                                                                   "metrics_port": 65535}),
    (SERVE + ["--intra-op-threads", "0", "--streams", "3", "--max-batch-size", "1", "--max-queue-size", "1",
              "--max-queue-delay-us", "0"], {"intra_op_threads": 0, "streams": 3, "max_batch_size": 1,
                                             "max_queue_size": 1, "max_queue_delay_us": 0}),
    (SERVE + ["--tile-size", "0", "--tile-overlap", "0", "--max-pixels", "1", "--max-message-mb", "2047"],
     {"tile_size": 0, "tile_overlap": 0, "max_pixels": 1, "max_message_mb": 2047}),
    (SERVE + ["--grace-seconds", "0", "--drain-seconds", "2.5", "--poll-seconds", "0.25"],
     {"grace_seconds": 0.0, "drain_seconds": 2.5, "poll_seconds": 0.25}),
    (SERVE, {"port": 8001, "http_port": 8000, "metrics_port": 8002, "tile_size": 128, "tile_overlap": 16,
             "streams": 0, "grace_seconds": 30.0, "max_message_mb": 64, "max_batch_size": None}),  # the defaults
    (["client", "--server", "localhost:1", "--timeout", "0.5", "list"], {"server": "localhost:1", "timeout": 0.5}),
    (CLIENT_SR + ["--quality", "100", "--tile-size", "0", "--tile-overlap", "8"],
     {"quality": 100, "tile_size": 0, "tile_overlap": 8}),
    (CLIENT_SR, {"quality": 0, "tile_size": None, "tile_overlap": None}),
    (["client", "generate", "o.png", "--model", "m", "--seed", str(2**64 - 1)], {"seed": 2**64 - 1}),
    (["client", "classify", "i.png", "--model", "m", "--top-k", "1"], {"top_k": 1}),
    (BENCH + ["--duration", "0.1", "--sizes", "16,32", "--batch", "1", "--concurrency", "1,4"],
     {"duration": 0.1, "sizes": [16, 32], "batch": [1], "concurrency": [1, 4]}),
    (BENCH + ["--requests", "1"], {"requests": 1, "duration": None}),
    (["demo", "--examples", "1", "--bench-requests", "1", "--train-minutes", "0.01"],
     {"examples": 1, "bench_requests": 1, "train_minutes": 0.01}),
    (["train", "srresnet", "--steps", "0", "--seed", "0", "--budget-minutes", "0.5"],
     {"steps": 0, "seed": 0, "budget_minutes": 0.5}),
])
def test_good_values_still_parse(argv: list[str], want: dict, tmp_path: Path) -> None:
    argv = _argv(argv, tmp_path)
    args = build_parser(argv).parse_args(argv)
    assert {k: getattr(args, k, None) for k in want} == want


def _numeric_actions(parser: argparse.ArgumentParser, prog: str = "") -> list[tuple[str, str, object]]:
    """(command, flag, type) of every option of a parser and of its sub-commands, recursively."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _numeric_actions(sub, f"{prog} {name}".strip())
        elif action.option_strings:
            found.append((prog, action.option_strings[-1], action.type))
    return found


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_command_takes_an_unchecked_int_or_float(command: str) -> None:
    """A plain type=int or type=float takes any value; every numeric flag must use a checked type instead."""
    actions = _numeric_actions(build_parser([command]))
    assert [a for a in actions if a[0].startswith(command)], "the command registered no options"
    assert [a for a in actions if a[2] in (int, float)] == []


@pytest.mark.parametrize("target", ["127.0.0.1:8001", "localhost", "[::1]:8001", "dns:///localhost:8001",
                                    "unix:/tmp/ganserve.sock", "host:65535"])
def test_server_addresses_grpc_takes_pass_unchanged(target: str) -> None:
    assert address(target) == target


def test_serve_with_an_out_of_range_port_exits_2_at_once(tmp_path: Path) -> None:
    """The real command line, in its own process: refused before the repository is even looked at."""
    done = subprocess.run([sys.executable, "-m", "ganserve.pipeline.cli", "serve", "--repo", str(tmp_path / "none"),
                           "--port", "99999"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "ganserve serve: error: argument --port: must be 0..65535, got 99999\n"
