"""`python -m dataplane` arguments."""

from __future__ import annotations

import argparse

import pytest

from dataplane.__main__ import build_parser, is_loopback, main, parse_endpoint, parse_size


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


def test_a_gateway_reachable_from_other_machines_needs_an_admin_token(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("BERTH_DATAPLANE_ADMIN_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="set --admin-token"):
        main(["--host", "0.0.0.0", "--state-dir", str(tmp_path)])
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert not is_loopback("dataplane")


def test_the_admin_token_comes_from_the_environment_by_default(monkeypatch) -> None:
    monkeypatch.setenv("BERTH_DATAPLANE_ADMIN_TOKEN", "s3cret")
    assert build_parser().parse_args(["--state-dir", "/tmp/d"]).admin_token == "s3cret"
    monkeypatch.setenv("BERTH_DATAPLANE_ADMIN_TOKEN", "")
    assert build_parser().parse_args(["--state-dir", "/tmp/d"]).admin_token is None
