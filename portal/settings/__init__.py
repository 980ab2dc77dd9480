"""Berth's settings: one base plus a small module per integration, all read from the
environment. Nothing here exists only in production."""

from .aws import *  # noqa: F401,F403
from .base import *  # noqa: F401,F403
from .broker import *  # noqa: F401,F403
from .database import *  # noqa: F401,F403
from .dataplane import *  # noqa: F401,F403
from .loadtests import *  # noqa: F401,F403
from .monitoring import *  # noqa: F401,F403
from .notifications import *  # noqa: F401,F403
from .registry import *  # noqa: F401,F403
from .runs import *  # noqa: F401,F403
from .storage import *  # noqa: F401,F403
