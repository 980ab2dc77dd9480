"""What an error may show a client: served names and server paths rewritten."""

from __future__ import annotations

import json

import pytest

from dataplane.errors import (
    MAX_MESSAGE_CHARS,
    ScrubContext,
    ServedModel,
    error_class,
    model_error,
    scrub_error,
    scrub_message,
    validation_error,
)

ROOT = "/srv/berth/state/repository"
WORK = "/srv/berth/state/work"
STORE = "/srv/berth/stores/main"
PREFIX = "acc_1-8e512210--"
TARGET = "acc_1.tar.gz"

# A package served as one model folder per model (`<prefix><model>`), its ensemble invoked.
FOLDERS = ServedModel(
    PREFIX + "acc_ensemble",
    {
        PREFIX + "acc_ensemble": "acc_ensemble",
        PREFIX + "acc_preprocess": "acc_preprocess",
        PREFIX + "acc_classifier": "acc_classifier",
    },
    PREFIX,
)
# The same package served from a folder of its own (`<served>/<model>`), whose name is the
# package's served name and the prefix of every name the gateway chose for it.
SERVED = "acc_1-8e5122100524"
PACKAGE_FOLDER = ServedModel(SERVED, {SERVED: "acc_ensemble"}, SERVED)


def scrub(message: str, served: ServedModel | None = FOLDERS, store: str | None = STORE) -> str:
    return scrub_message(message, ScrubContext(TARGET, served, ROOT, WORK, store))


def test_a_traceback_names_the_target_the_step_and_paths_inside_the_package() -> None:
    message = (
        f"in ensemble '{PREFIX}acc_ensemble', Failed to process the request(s) for model "
        f"instance '{PREFIX}acc_preprocess_0_0', message: ValueError: bad input at "
        f"{ROOT}/{PREFIX}acc_preprocess/1/model.py\n\nAt:\n"
        f"  {ROOT}/{PREFIX}acc_preprocess/1/model.py(4): helper\n"
        f"  /usr/lib/python3.10/site-packages/numpy/core/fromnumeric.py(59): _wrapfunc\n"
    )
    assert scrub(message) == (
        f"in ensemble '{TARGET}', Failed to process the request(s) for model instance "
        "'acc_preprocess_0_0', message: ValueError: bad input at acc_preprocess/1/model.py\n\n"
        "At:\n  acc_preprocess/1/model.py(4): helper\n  fromnumeric.py(59): _wrapfunc\n"
    )


def test_the_invoked_models_instance_is_named_by_its_own_name() -> None:
    served = ServedModel(PREFIX + "screen", {PREFIX + "screen": "screen"}, PREFIX)
    message = f"for model instance '{PREFIX}screen_0_0' of model '{PREFIX}screen'"
    assert scrub(message, served) == f"for model instance 'screen_0_0' of model '{TARGET}'"


def test_a_package_in_a_folder_of_its_own_keeps_its_inner_paths() -> None:
    message = f'File "{ROOT}/{SERVED}/preprocess/1/model.py", line 3, in execute'
    assert scrub(message, PACKAGE_FOLDER) == 'File "preprocess/1/model.py", line 3, in execute'
    message = f"model '{SERVED}', instance '{SERVED}_0_1', at {ROOT}/{SERVED}/config.pbtxt"
    assert scrub(message, PACKAGE_FOLDER) == (
        f"model '{TARGET}', instance 'acc_ensemble_0_1', at acc_ensemble/config.pbtxt"
    )
    # Before its names are known, the served name is the prefix alone.
    message = (
        f"load failed for model '{SERVED}': instance '{SERVED}_0_0' at "
        f"{ROOT}/{SERVED}/acc_preprocess/1/model.py"
    )
    assert scrub(message, ServedModel(None, {}, SERVED)) == (
        f"load failed for model '{TARGET}': instance '{TARGET}_0_0' at acc_preprocess/1/model.py"
    )


def test_before_the_names_are_known_the_prefix_stands_for_them() -> None:
    unknown = ServedModel(None, {}, PREFIX)
    message = (
        f"load failed for model '{PREFIX}acc_ensemble': failed to load '{PREFIX}acc_preprocess'"
        f" from {ROOT}/{PREFIX}acc_preprocess/1/model.py"
    )
    assert scrub(message, unknown) == (
        "load failed for model 'acc_ensemble': failed to load 'acc_preprocess' from "
        "acc_preprocess/1/model.py"
    )


def test_work_dir_paths_become_paths_inside_the_package() -> None:
    message = (
        f"[Errno 2] No such file or directory: '{WORK}/0f3a/repository/acc_preprocess/"
        f"config.pbtxt'; {WORK}/0f3a/package/{TARGET}; {WORK}/0f3a"
    )
    assert scrub(message) == (
        f"[Errno 2] No such file or directory: 'acc_preprocess/config.pbtxt'; {TARGET}; 0f3a"
    )


@pytest.mark.parametrize("store", [STORE, "s3://models/prod", "s3://models/prod/"])
def test_the_store_is_named_by_the_package(store: str) -> None:
    location = store.rstrip("/")
    message = (
        f"Could not find model data for {TARGET} in the model store of endpoint main "
        f"({location}). cannot download {location}/{TARGET}.sha256: 403. See {location}."
    )
    assert scrub(message, store=store) == (
        f"Could not find model data for {TARGET} in the model store of endpoint main "
        f"({TARGET}). cannot download {TARGET}.sha256: 403. See {TARGET}."
    )
    # A longer name that starts like the store is not the store.
    assert scrub(f"{location}2/x.tar.gz", store=store) != f"{TARGET}2/x.tar.gz"


def test_other_absolute_paths_are_cut_to_their_file_name_and_the_rest_kept() -> None:
    message = (
        "cannot connect to /proc/4242/root/run/berth/http.sock. See http://example.com/a/b, "
        "s3://bucket/key/x, I/O and/or 1/2 and ./relative/path."
    )
    assert scrub(message, None, None) == (
        "cannot connect to http.sock. See http://example.com/a/b, s3://bucket/key/x, I/O "
        "and/or 1/2 and ./relative/path."
    )


def test_a_huge_message_is_cut_before_it_is_rewritten() -> None:
    message = "x" * (MAX_MESSAGE_CHARS * 4)
    scrubbed = scrub(message)
    assert len(scrubbed) < MAX_MESSAGE_CHARS + 20 and scrubbed.endswith("[truncated]")


def test_a_model_error_keeps_its_statuses_and_scrubs_both_messages() -> None:
    original = f"unexpected inference input 'INPUT' for model '{PREFIX}acc_ensemble'"
    error = scrub_error(
        model_error(400, original, model_name=TARGET),
        ScrubContext(TARGET, FOLDERS, ROOT, WORK, STORE),
    )
    assert (error.status, error.error_type, error.error_code) == (424, "ModelError", "ModelError")
    assert error.headers()["x-amzn-ErrorType"] == "ModelError"
    body = json.loads(error.body())
    assert body["OriginalStatusCode"] == 400
    assert body["OriginalMessage"] == f"unexpected inference input 'INPUT' for model '{TARGET}'"
    assert body["Message"] == (
        f"Received client error (400) from model {TARGET} with message "
        f"\"unexpected inference input 'INPUT' for model '{TARGET}'\"."
    )
    assert error_class(error.status, error) == 4

    refused = scrub_error(
        validation_error("bad", status=413, error_code="PayloadTooLarge"),
        ScrubContext(None, None, ROOT, WORK, STORE),
    )
    assert (refused.status, refused.error_code, refused.message) == (413, "PayloadTooLarge", "bad")
