"""The embedded broker's transport: kombu's filesystem transport, with a worker that never
waits on its own loop.

kombu's filesystem transport cannot wake a worker when a message arrives, so Celery runs
its blocking loop (`celery.worker.loops.synloop`): it calls `drain_events(timeout=2.0)`,
which polls the queue folder every `polling_interval` until a message comes or the two
seconds end. A worker's acknowledgements (and with them its free prefetch slots) are only
carried out between two such calls (`Consumer.perform_pending_operations`). So once every
slot was taken, a finished task's slot stayed taken for up to two seconds, and a queue of
short tasks went through at one task per slot every two seconds.

Here a drain hands control back to the loop, after one polling interval, whenever a channel
it could deliver to has every prefetch slot taken: the loop then does its pending work
(acknowledgements free the slots) and drains again. A channel without a prefetch limit (a
client collecting replies) waits its whole timeout as before.

kombu's filesystem transport also writes a message in place, under the name readers look for:
a worker listing the folder between the file's creation and its write took it, read it empty
and stopped on the JSON error. Here a message is written under a name no reader looks for and
renamed into place whole.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic, sleep

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# Seconds between two looks at the queue folder (kombu's default is 1): a queued task starts
# within about this long, for one directory listing per poll of an idle worker.
POLLING_INTERVAL = 0.05


def filesystem_options(folder: Path) -> dict:
    """The transport options of an embedded broker kept in `folder` (created here)."""
    folder = Path(folder)
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        # Broadcast (remote control) messages too, instead of ./control in the working folder.
        "control_folder": str(folder / "control"),
        "polling_interval": POLLING_INTERVAL,
    }


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue` whole (named as kombu names it: time first, so that
        readers take messages in order)."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        # No queue's name in it: `_get` takes files whose name holds `.<queue>.msg`.
        partial = os.path.join(folder, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(folder, name))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel

    def drain_events(self, connection, timeout=None):
        started = monotonic()
        interval = self.polling_interval or 0
        if timeout is not None:
            interval = min(interval, timeout)
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                if self._slots_full():
                    # Only the caller's loop can free a slot: give it the turn.
                    sleep(interval)
                    raise TimeoutError() from None
                if timeout is not None and monotonic() - started >= timeout:
                    raise TimeoutError() from None
                sleep(interval)
            else:
                return

    def _slots_full(self) -> bool:
        """Whether a channel with consumers has all its prefetch slots taken."""
        return any(
            channel._consumers and not channel.qos.can_consume()
            for channel in self.channels
            if not getattr(channel, "closed", False)
        )
