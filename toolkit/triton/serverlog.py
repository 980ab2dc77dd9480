"""The log file a tritonserver run writes (its stdout and stderr), and what to show from it."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO

# Triton's glog-style error lines: "E1123 18:34:50.209927 32211 file.cc:123] message".
_LOG_ERROR = re.compile(r"^E\d{4} ")


class ServerLog:
    """One log file, appended to by each run; reading starts where the current run began.

    Without a path, a private temporary folder holds it.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = Path(path) if path else None
        self._file: IO[bytes] | None = None
        self._offset = 0

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="berth-triton-log-")) / "tritonserver.log"
        return self._path

    def open(self, *, max_bytes: int) -> IO[bytes]:
        """Open for a new run. A log past `max_bytes` is moved aside first: Triton writes it
        under the sandbox's file-size limit and would be killed by SIGXFSZ past it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if self.path.stat().st_size > max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the process
        self._offset = self._file.tell()
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def tail(self, max_bytes: int = 8000) -> str:
        """The end of this run's log (earlier runs appended to the same file are skipped)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(self._offset, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def problems(self, max_lines: int = 20) -> str:
        """Error lines of this run's log: what to show when Triton did not come up."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                text = fh.read(4 * 1024 * 1024).decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [
            line
            for line in text.splitlines()
            if _LOG_ERROR.match(line) or line.lower().startswith(("error", "bad option", "invalid"))
        ]
        return "\n".join(lines[:max_lines]) or self.tail(2000)
