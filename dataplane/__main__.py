"""`python -m dataplane`: run the gateway (and the Triton server it supervises).

    python -m dataplane --host 127.0.0.1 --port 8081 --store-root var/stores \\
        --state-dir var/dataplane --endpoint local-staging:2GiB --endpoint local-production
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import re
import sys
from pathlib import Path

from dataplane.staging import DEFAULT_NICENESS

# The gateway and server are imported in main(), not here: the staging processes, spawned,
# import this module again (as `__mp_main__`) and need none of the gateway's imports (grpc,
# the Triton clients).

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str) -> int:
    """Bytes from `1073741824`, `512MiB`, `2G`, `1.5GB` (binary units with an `i`)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    number, unit = match.group(1), (match.group(2) or "").lower()
    base = unit[:1]
    factor = 1024 ** "_kmgt".index(base) if "i" in unit and base else _UNITS[base]
    return int(float(number) * factor)


def parse_endpoint(text: str) -> tuple[str, int | None]:
    name, _, budget = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError("endpoint needs a name")
    return name, parse_size(budget) if budget else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dataplane",
        description="Berth's local data plane: a SageMaker-shaped multi-model gateway on Triton.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--store-root", type=Path, help="folder holding one model store folder per endpoint"
    )
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="endpoints, Triton repository"
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        type=parse_endpoint,
        metavar="NAME[:BUDGET]",
        help="serve this endpoint (store <store-root>/NAME); budget in bytes, e.g. 2GiB",
    )
    parser.add_argument("--default-budget", type=parse_size, default=parse_size("2GiB"))
    parser.add_argument("--max-request-bytes", type=parse_size, default=6 * 1024 * 1024)
    parser.add_argument("--metrics-window-minutes", type=int, default=180)
    parser.add_argument("--sample-interval", type=float, default=10.0)
    parser.add_argument("--load-timeout", type=float, default=600.0)
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="gpu", action="store_true", default=None)
    gpu.add_argument("--no-gpu", dest="gpu", action="store_false")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("BERTH_DATAPLANE_ADMIN_TOKEN") or None,
        help="bearer token the admin API asks for (default: $BERTH_DATAPLANE_ADMIN_TOKEN); "
        "this or --admin-token-file is required",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        default=os.environ.get("BERTH_DATAPLANE_ADMIN_TOKEN_FILE") or None,
        help="file holding the admin token (default: $BERTH_DATAPLANE_ADMIN_TOKEN_FILE); "
        "keeps the token out of process listings and environments",
    )
    parser.add_argument(
        "--staging-niceness",
        type=int,
        choices=range(20),
        default=DEFAULT_NICENESS,
        metavar="0-19",
        help="nice value of the processes that fetch and unpack packages, so that loads "
        f"yield the CPU to serving (default {DEFAULT_NICENESS})",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MIN_TOKEN_LENGTH = 16


def admin_token(args: argparse.Namespace) -> str:
    """The admin token from --admin-token or --admin-token-file; exits when there is none.

    The admin API places models and switches what serves: it is never open, on loopback
    either (every local process, a model's code included, can reach loopback).
    """
    token = args.admin_token or ""
    if not token and args.admin_token_file is not None:
        try:
            token = args.admin_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            sys.exit(f"cannot read the admin token file {args.admin_token_file}: {exc}")
    if not token:
        sys.exit(
            "the data plane's admin API needs a token: set --admin-token-file (or "
            "BERTH_DATAPLANE_ADMIN_TOKEN_FILE), or --admin-token (BERTH_DATAPLANE_ADMIN_TOKEN)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        sys.exit(f"the admin token is too short: at least {MIN_TOKEN_LENGTH} characters")
    return token


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.endpoint and args.store_root is None:
        sys.exit("--endpoint needs --store-root (each endpoint's store is <store-root>/NAME)")
    token = admin_token(args)
    from dataplane.gateway import Gateway, GatewaySettings
    from dataplane.server import serve

    settings = GatewaySettings(
        state_dir=args.state_dir,
        store_root=args.store_root,
        max_request_bytes=args.max_request_bytes,
        load_timeout=args.load_timeout,
        metrics_window_minutes=args.metrics_window_minutes,
        sample_interval=args.sample_interval,
        default_budget_bytes=args.default_budget,
        gpu=args.gpu,
        endpoints=args.endpoint,
        admin_token=token,
        staging_niceness=args.staging_niceness,
    )
    coroutine = serve(Gateway(settings), args.host, args.port)
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, a little slower.
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


if __name__ == "__main__":
    main()
