"""`python -m dataplane` arguments."""

from __future__ import annotations

import argparse

import pytest

from dataplane.__main__ import build_parser, parse_endpoint, parse_size


def test_sizes_accept_bytes_and_binary_or_decimal_units() -> None:
    assert parse_size("1073741824") == 1024**3
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("64k") == 64_000
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")


def test_endpoints_take_an_optional_budget() -> None:
    assert parse_endpoint("local-staging") == ("local-staging", None)
    assert parse_endpoint("local-production:4GiB") == ("local-production", 4 * 1024**3)
    args = build_parser().parse_args(
        [
            "--store-root",
            "/tmp/s",
            "--state-dir",
            "/tmp/d",
            "--endpoint",
            "a",
            "--endpoint",
            "b:1GiB",
            "--max-request-bytes",
            "1MiB",
        ]
    )
    assert args.endpoint == [("a", None), ("b", 1024**3)]
    assert args.max_request_bytes == 1024**2 and args.port == 8081 and args.gpu is None
