"""Fixtures shared by every app's tests."""

import pytest


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A real local data plane (gateway + tritonserver) in its own process, with no endpoints:
    the portal creates them through the admin API as it deploys."""
    from dataplane.tests.gateway_fixtures import GatewayProcess

    process = GatewayProcess(tmp_path_factory.mktemp("gateway"), [])
    process.start()
    yield process
    process.stop()
