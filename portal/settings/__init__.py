"""Berth's settings: one base plus a small module per integration, all read from the
environment. Nothing here exists only in production."""

from .base import *  # noqa: F401,F403
from .database import *  # noqa: F401,F403
from .broker import *  # noqa: F401,F403
from .storage import *  # noqa: F401,F403
from .dataplane import *  # noqa: F401,F403
from .aws import *  # noqa: F401,F403
