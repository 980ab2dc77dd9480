"""`python -m dataplane.native`: build the compiled gateway when its sources changed."""

from __future__ import annotations

import argparse
import sys

from dataplane.native import FOLDER, build, current


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the gateway's compiled request path (mypyc)."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 unless the build is current")
    parser.add_argument("--force", action="store_true", help="build even when current")
    args = parser.parse_args(argv)
    if args.check:
        ok = current()
        print("compiled gateway: " + ("current" if ok else f"out of date or missing ({FOLDER})"))
        return 0 if ok else 1
    if current() and not args.force:
        return 0
    print("Compiling the gateway's request path (mypyc)...", flush=True)
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
