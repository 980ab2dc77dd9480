"""The invocation route's pieces that need no Triton: scrubbing an error about a request."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from dataplane.errors import model_error
from dataplane.gateway import Endpoint, LoadedModel
from dataplane.server import scrubbed, served_model

TARGET = "screen_1.tar.gz"


@pytest.fixture
def endpoint(tmp_path: Path) -> Endpoint:
    return Endpoint("main", str(tmp_path / "store"), 10**9)


def folders(tmp_path: Path) -> SimpleNamespace:
    """The two folders of a gateway that `scrubbed` reads."""
    return SimpleNamespace(repository=tmp_path / "repository", work_dir=tmp_path / "work")


def loaded(endpoint: Endpoint, served_names: list[str]) -> LoadedModel:
    served = endpoint.prefix(TARGET)
    return LoadedModel(
        target_model=TARGET,
        served_name=served,
        served_names=served_names,
        prefix=served,
        rss_bytes=0,
        gpu_bytes=0,
        loaded_at=time.time(),
        generation=1,
        model_name="screen",
    )


def test_a_loaded_models_served_name_becomes_the_target(tmp_path: Path, endpoint: Endpoint) -> None:
    model = loaded(endpoint, [endpoint.prefix(TARGET)])
    endpoint.loaded[TARGET] = model
    assert served_model(model).names == {model.served_name: "screen"}
    original = (
        f"for model '{model.served_name}' at "
        f"{tmp_path}/repository/{model.served_name}/screen/1/model.py"
    )
    error = scrubbed(
        model_error(500, original, model_name=TARGET), folders(tmp_path), endpoint, TARGET
    )
    assert error.extra["OriginalMessage"] == f"for model '{TARGET}' at screen/1/model.py"


def test_an_error_that_cannot_be_scrubbed_is_answered_without_its_text(
    tmp_path: Path, endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.loaded[TARGET] = loaded(endpoint, None)  # type: ignore[arg-type]
    original = f"failed at {tmp_path}/repository/x/1/model.py"
    with caplog.at_level(logging.ERROR, logger="dataplane.server"):
        error = scrubbed(
            model_error(500, original, model_name=TARGET), folders(tmp_path), endpoint, TARGET
        )
    assert (error.status, error.error_type, error.extra["OriginalStatusCode"]) == (
        424,
        "ModelError",
        500,
    )
    body = json.loads(error.body())
    assert "OriginalMessage" not in body and str(tmp_path) not in body["Message"]
    assert TARGET in body["Message"]
    assert "scrubbing an error" in caplog.text
