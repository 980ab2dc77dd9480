from deployments.tests.conftest import (  # noqa: F401 - shared fixtures
    approver,
    aws,
    isolated_stores,
    platform_admin,
    scientist,
    second_approver,
)
