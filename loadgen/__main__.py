"""`python -m loadgen`: one spec line on stdin, JSON event lines on stdout.

stdin stays open as the control channel: a "stop" line, or its end (the parent went away),
stops the generator at once, as do SIGTERM and SIGINT ("stopped") and SIGHUP (the signal
the kernel sends when the launching parent dies, `launcher.die_with_parent`:
"parent_gone"). Exit codes: 0 after `done`, 2 for a spec that cannot run (one `error`
line), 1 for anything unexpected.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import time
from typing import Any

from loadgen.generator import Generator, clock_to_epoch, epoch_to_clock
from loadgen.launcher import die_with_parent
from loadgen.spec import MAX_SPEC_BYTES, SpecError, parse
from loadgen.targets import TargetError, build

#: Lead time before the first request when no start_at is given (connections open in it).
START_DELAY_S = 0.1


class _Output:
    """JSON lines on stdout, flushed as written; a parent that stopped reading stops us."""

    def __init__(self) -> None:
        self._out = sys.stdout.buffer
        self.broken = False
        self.on_broken: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            self._out.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
            self._out.flush()
        except (BrokenPipeError, OSError):
            self.broken = True
            if self.on_broken is not None:
                asyncio.get_running_loop().call_soon(self.on_broken)


async def _open_stdin() -> asyncio.StreamReader | None:
    """stdin as an asyncio stream when it is a pipe or socket (the launcher's pipe).

    None for anything else (a file, a terminal, /dev/null: uvloop cannot watch those): the
    spec is then read as one line, and signals are the only control.
    """
    mode = os.fstat(0).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_SPEC_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _control(reader: asyncio.StreamReader, generator: Generator) -> None:
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # An over-long line: not a command.
            continue
        if not line:
            generator.stop("parent_gone")
            return
        if line.strip() == b"stop":
            generator.stop("stopped")
            return


def _error(emit: _Output, field: str, reason: str) -> int:
    emit({"event": "error", "field": field, "reason": reason, "message": f"{field}: {reason}"})
    return 2


async def main() -> int:
    emit = _Output()
    if not die_with_parent():
        emit({"event": "done", "reason": "parent_gone", "cpu_s": 0.0})
        return 0
    reader = await _open_stdin()
    try:
        if reader is not None:
            line = await reader.readline()
        else:
            line = sys.stdin.buffer.readline(MAX_SPEC_BYTES + 1)
    except ValueError:
        return _error(emit, "spec", f"longer than {MAX_SPEC_BYTES} bytes")
    if len(line) > MAX_SPEC_BYTES:
        return _error(emit, "spec", f"longer than {MAX_SPEC_BYTES} bytes")
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return _error(emit, "spec", f"not a JSON object: {exc}")
    try:
        spec = parse(raw)
        source = build(spec)
    except SpecError as exc:
        return _error(emit, exc.field, exc.reason)
    except TargetError as exc:
        return _error(emit, "target", str(exc))

    generator = Generator(spec, source, emit)
    emit.on_broken = lambda: generator.stop("parent_gone")
    loop = asyncio.get_running_loop()
    for signum, reason in (
        (signal.SIGTERM, "stopped"),
        (signal.SIGINT, "stopped"),
        (signal.SIGHUP, "parent_gone"),
    ):
        loop.add_signal_handler(signum, generator.stop, reason)
    now = generator.clock()
    if spec.start_at is not None:
        start = max(epoch_to_clock(spec.start_at), now)
    else:
        start = now + START_DELAY_S
    emit({"event": "started", "pid": os.getpid(), "start": round(clock_to_epoch(start), 6)})
    control = loop.create_task(_control(reader, generator)) if reader is not None else None
    await generator.run(start)
    if control is not None:
        control.cancel()
    return 0


def run() -> int:
    import uvloop

    started = time.monotonic()
    try:
        return uvloop.run(main())
    except Exception as exc:  # Say what broke, on the channel the parent reads.
        print(
            json.dumps(
                {
                    "event": "error",
                    "field": "generator",
                    "reason": f"{type(exc).__name__}: {exc}",
                    "message": f"generator failed after {time.monotonic() - started:.1f} s",
                }
            ),
            flush=True,
        )
        raise


if __name__ == "__main__":
    sys.exit(run())
