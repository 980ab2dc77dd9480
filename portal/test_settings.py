"""Settings for the test suite: the portal's own settings, with a throwaway secret key and
the tests' data-plane admin token.

They are set in the environment before the settings are read, so the production checks
(no development secret key, an admin token) apply to the tests unchanged, and the Celery
workers and gateways the tests start inherit the same values.
"""

import os
import secrets

os.environ.setdefault("DJANGO_SECRET_KEY", "berth-tests-" + secrets.token_hex(16))
# dataplane/tests/gateway_fixtures.py starts its gateways with this token too.
os.environ.setdefault("BERTH_DATAPLANE_ADMIN_TOKEN", "berth-test-dataplane-admin-token")

from portal.settings import *  # noqa: E402,F401,F403

# Tests render pages without running collectstatic first: static files keep their plain
# names and are served from the source folders. portal/tests/test_static.py runs the
# production storage (hashed, compressed) through collectstatic on its own.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
