"""Shared set-up of the data-plane benchmarks: a gateway process and its model packages."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._loadgen import Target  # noqa: E402
from dataplane.tests.gateway_fixtures import (  # noqa: E402
    TARGET_HEADER,
    GatewayProcess,
    infer_body,
    python_package,
)

X = [1.0, 2.0, 3.0, 4.0]
BODY = infer_body(X)


class BenchGateway(GatewayProcess):
    """A gateway in a temporary folder that is removed when it stops."""

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_gateway(endpoints: list[str], extra_args: list[str] | None = None) -> GatewayProcess:
    root = Path(tempfile.mkdtemp(prefix="berth-bench-gw-"))
    return BenchGateway(root, endpoints, extra_args=extra_args).start()


def gateway_target(gw: GatewayProcess, endpoint: str, package: str) -> Target:
    return Target(
        "gateway",
        "127.0.0.1",
        gw.port,
        f"/endpoints/{endpoint}/invocations",
        BODY,
        {TARGET_HEADER: package, "Content-Type": "application/json"},
    )


def direct_target(gw: GatewayProcess, endpoint: str, package: str) -> Target:
    """The same model straight on the gateway's Triton (its served name, its port)."""
    models = gw.get(f"/admin/endpoints/{endpoint}/models")[1]["models"]
    served = next(m["served_model"] for m in models if m["target_model"] == package)
    url = urlsplit(gw.status()["triton"]["http_url"])
    return Target(
        "direct",
        url.hostname or "127.0.0.1",
        url.port or 80,
        f"/v2/models/{served}/infer",
        BODY,
        {"Content-Type": "application/json"},
    )


def warm(gw: GatewayProcess, endpoint: str, package: str) -> dict:
    status, data = gw.send_json("POST", f"/admin/endpoints/{endpoint}/models/{package}/load", {})
    if status != 200:
        raise RuntimeError(f"loading {package} failed: {json.dumps(data)}")
    return data


__all__ = ["GatewayProcess", "python_package", "start_gateway", "gateway_target", "direct_target"]
