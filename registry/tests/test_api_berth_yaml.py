"""berth.yaml as users write it: its JSON Schema (served, and in agreement with the server's
checks both ways), the OpenAPI description of `test_cases` (a client built from it is
accepted), the README's examples (registered and tested for real), and the one-line
`status_reason` of a version that ends invalid or test_failed."""

import json
import re
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.urls import reverse

from registry import plans
from registry.choices import VersionStatus
from registry.models import MAX_STATUS_REASON, ModelVersion, status_reason_for
from registry.packaging import build_tar_gz
from registry.validation import test_cases_schema_problems as case_problems
from registry.validation import validate_repository
from registry.validation.schema import SCHEMA_PATH, berth_schema, openapi_schema
from runs.models import Run
from toolkit.examples import write_demo_repository
from toolkit.limits import MAX_TENSOR_DIMS

from . import archives
from .conftest import LINEAGE

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parents[2] / "README.md"
SCHEMA_URL = "/api/v1/schemas/berth.yaml.json"


def versions_url(name: str) -> str:
    return reverse("registry-api:version-list", kwargs={"name": name})


def version_url(name: str, version: int) -> str:
    return reverse("registry-api:version-detail", kwargs={"name": name, "version": version})


def version_id(number: int) -> int:
    return ModelVersion.objects.get(model__name="iris", version=number).pk


def schema_validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    schema = berth_schema()
    if definition:
        schema = {"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(schema)


# -- the schema document ----------------------------------------------------------------------


def test_the_schema_is_served_to_anyone_with_cache_headers(client):
    assert reverse("registry-api:berth-schema") == SCHEMA_URL
    response = client.get(SCHEMA_URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/schema+json"
    assert "public" in response["Cache-Control"] and "max-age=3600" in response["Cache-Control"]
    assert response.content == SCHEMA_PATH.read_bytes()
    served = json.loads(response.content)
    jsonschema.Draft202012Validator.check_schema(served)
    assert served["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    again = client.get(SCHEMA_URL, HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304 and not again.content
    assert client.head(SCHEMA_URL).status_code == 200
    assert client.post(SCHEMA_URL).status_code == 405


def test_the_upload_page_and_the_api_docs_link_the_schema(client, api, model, user):
    client.force_login(user)
    page = client.get(reverse("registry:version-upload", kwargs={"name": "iris"}))
    assert page.status_code == 200
    html = page.content.decode()
    assert f'href="{SCHEMA_URL}"' in html and "Writing berth.yaml" in html
    document = api.get(reverse("api-schema") + "?format=json").json()
    register = document["paths"]["/api/v1/models/{name}/versions/"]["post"]
    assert SCHEMA_URL in register["description"]


# -- schema and server agree -----------------------------------------------------------------

RAW = {"datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


def case(**changes) -> dict:
    """A valid case for the demo ensemble, with `changes` (None removes a key)."""
    value = {
        "name": "c",
        "inputs": {"RAW": dict(RAW)},
        "expected": {"PROBABILITIES": {"data": [1, 0, 0]}},
    }
    for key, item in changes.items():
        if item is None:
            value.pop(key)
        else:
            value[key] = item
    return value


def raw(**changes) -> dict:
    return case(inputs={"RAW": {**RAW, **changes}})


def probabilities(**spec) -> dict:
    return case(expected={"PROBABILITIES": spec})


def nested(depth: int) -> list:
    data: list = [1.0]
    for _ in range(depth - 1):
        data = [data]
    return data


# Lists of test cases: both the schema (`$defs/testCases`) and the server accept these...
GOOD_CASES = {
    "empty": [],
    "minimal": [case()],
    "the demo's": [case(name="a"), case(name="b", description="two")],
    "no name": [case(name=None)],
    "no expected": [case(expected=None)],
    "empty expected": [case(expected={})],
    "own model": [case(model="demo_preprocess")],
    "empty model": [case(model="")],
    "description of any type": [case(description=["free", "text"])],
    "nested data": [raw(shape=[1, 4], data=[[5.1, 3.5], [1.4, 0.2]])],
    "booleans and integers for FP32": [raw(data=[True, 1, 0, 2.5])],
    "BYTES text": [raw(datatype="BYTES", data=["a", "b", "c", "d"])],
    "BYTES numbers": [raw(datatype="BYTES", data=[1, 2, 3, 4])],
    "empty tensor": [raw(shape=[0, 4], data=[])],
    "16 dims": [raw(shape=[1] * MAX_TENSOR_DIMS, data=nested(MAX_TENSOR_DIMS))],
    "NaN and infinities": [probabilities(data=[float("nan"), float("inf"), float("-inf")])],
    "text expected without datatype": [probabilities(data=["x", "y", "z"])],
    "every expected key": [
        probabilities(datatype="FP32", shape=[1, 3], data=[1, 0, 0], atol=0, rtol=0.5)
    ],
    "500 cases": [case(name=f"c{n}") for n in range(500)],
}
# ... both refuse these ...
BAD_CASES = {
    "a mapping": {"name": "c"},
    "text": "tests",
    "501 cases": [case(name=f"c{n}") for n in range(501)],
    "a case that is text": ["c"],
    "empty name": [case(name="")],
    "blank name": [case(name="   ")],
    "numeric name": [case(name=5)],
    "null name": [{**case(), "name": None}],
    "unknown case key": [case(output={})],
    "numeric model": [case(model=5)],
    "no inputs": [case(inputs=None)],
    "empty inputs": [case(inputs={})],
    "inputs as a list": [case(inputs=[RAW])],
    "input without datatype": [case(inputs={"RAW": {"shape": [1, 4], "data": [1, 2, 3, 4]}})],
    "input without shape": [case(inputs={"RAW": {"datatype": "FP32", "data": [1, 2, 3, 4]}})],
    "input without data": [case(inputs={"RAW": {"datatype": "FP32", "shape": [1, 4]}})],
    "tolerance on an input": [raw(atol=0.1)],
    "Triton's datatype name": [raw(datatype="TYPE_FP32")],
    "negative dim": [raw(shape=[-1, 4])],
    "shape as text": [raw(shape="1x4")],
    "boolean dim": [raw(shape=[True, 4])],
    "17 dims": [raw(shape=[1] * (MAX_TENSOR_DIMS + 1), data=[1.0])],
    "scalar data": [raw(shape=[1], data=5)],
    "null in data": [raw(data=[1, 2, 3, None])],
    "mapping in data": [raw(data=[1, 2, 3, {"v": 4}])],
    "text for FP32": [raw(data=["5.1", "3.5", "1.4", "0.2"])],
    "expected as a list": [case(expected=[{"data": [1]}])],
    "null expected": [{**case(), "expected": None}],
    "expected as bare values": [case(expected={"PROBABILITIES": [1, 0, 0]})],
    "expected without data": [probabilities(atol=0.1)],
    "negative atol": [probabilities(data=[1, 0, 0], atol=-1)],
    "atol as text": [probabilities(data=[1, 0, 0], atol="1e-3")],
    "boolean rtol": [probabilities(data=[1, 0, 0], rtol=True)],
    "unknown expected key": [probabilities(data=[1, 0, 0], tolerance=0.1)],
    "text for INT64": [probabilities(datatype="INT64", data=["1", "0", "0"])],
}
# ... and only the server refuses these: rules across fields, or beyond what JSON Schema
# can count. The schema's description lists them.
SERVER_ONLY_CASES = {
    "duplicate names": [case(name="same"), case(name="same")],
    "shape against data": [raw(shape=[2, 4])],
    "data nested 17 deep": [raw(shape=[1], data=nested(MAX_TENSOR_DIMS + 1))],
    "a dim written 1.0": [raw(shape=[1.0, 4])],
}


@pytest.mark.parametrize(
    ("cases", "verdict"),
    [
        *[pytest.param(cases, "good", id=f"good: {name}") for name, cases in GOOD_CASES.items()],
        *[pytest.param(cases, "bad", id=f"bad: {name}") for name, cases in BAD_CASES.items()],
        *[
            pytest.param(cases, "server only", id=f"server only: {name}")
            for name, cases in SERVER_ONLY_CASES.items()
        ],
    ],
)
def test_schema_and_server_agree_on_test_cases(cases, verdict):
    by_schema = schema_validator("testCases").is_valid(cases)
    problems = case_problems(cases, file="test_cases")
    by_server = not problems
    expected = {"good": (True, True), "bad": (False, False), "server only": (True, False)}
    assert (by_schema, by_server) == expected[verdict], problems


@pytest.fixture
def demo_repository(tmp_path) -> Path:
    return write_demo_repository(tmp_path / "repo")


# Whole berth.yaml files, through the validation that runs on an archive.
BERTH_FILES = [
    ("", "good"),
    ("{}", "good"),
    ("model: demo_ensemble", "good"),
    ("model: null\ntests: null\ndescription: 5", "good"),
    (
        "model: demo_ensemble\ntests:\n  - name: a\n"
        "    inputs: {RAW: {datatype: FP32, shape: [1, 4], data: [1, 2, 3, 4]}}\n"
        "    expected: {PROBABILITIES: {data: [.nan, .inf, -.inf]}}",
        "good",
    ),
    ("- model: demo_ensemble", "bad"),
    ("just text", "bad"),
    ("model: 5", "bad"),
    ("model: [demo_ensemble]", "bad"),
    ("tests: {name: a}", "bad"),
    ("test:\n  - {inputs: {RAW: {datatype: FP32, shape: [1, 4], data: [1, 2, 3, 4]}}}", "bad"),
    ("model: demo_classifier", "server only"),
    ("model: no_such_model", "server only"),
]


@pytest.mark.parametrize(("text", "verdict"), BERTH_FILES)
def test_schema_and_server_agree_on_berth_yaml(demo_repository, text, verdict):
    (demo_repository / "berth.yaml").write_text(text)
    problems = validate_repository(demo_repository).problems
    by_schema = schema_validator().is_valid(yaml.safe_load(text))
    expected = {"good": (True, True), "bad": (False, False), "server only": (True, False)}
    assert (by_schema, not problems) == expected[verdict], [str(p) for p in problems]


def test_the_openapi_translation_keeps_the_case_shape():
    translated = openapi_schema("testCase")
    assert translated["required"] == ["inputs"] and translated["additionalProperties"] is False
    tensor = translated["properties"]["inputs"]["additionalProperties"]
    assert tensor["required"] == ["datatype", "shape", "data"]
    assert "BYTES" in tensor["properties"]["datatype"]["enum"]
    assert "$ref" not in json.dumps(translated) and "if" not in json.dumps(translated)


# -- the OpenAPI description of test_cases -----------------------------------------------------


def openapi_document(api) -> dict:
    return api.get(reverse("api-schema") + "?format=json").json()


def resolve(document: dict, node: dict) -> dict:
    """The schema a reference names (drf-spectacular wraps a described one in `allOf`)."""
    while "$ref" in node or len(node.get("allOf", [])) == 1:
        ref = node["$ref"] if "$ref" in node else node["allOf"][0]["$ref"]
        node = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return node


def request_schema(document: dict, media_type: str) -> dict:
    operation = document["paths"]["/api/v1/models/{name}/versions/"]["post"]
    return resolve(document, operation["requestBody"]["content"][media_type]["schema"])


def test_openapi_says_test_cases_is_a_list_of_cases_or_its_json_text(api):
    document = openapi_document(api)
    for media_type in ("application/json", "multipart/form-data"):
        field = resolve(document, request_schema(document, media_type)["properties"]["test_cases"])
        kinds = {option["type"]: option for option in field["oneOf"]}
        assert set(kinds) == {"array", "string"}, field
        item = kinds["array"]["items"]
        assert item["required"] == ["inputs"]
        assert set(item["properties"]) == {"name", "model", "description", "inputs", "expected"}
        assert kinds["array"]["maxItems"] == 500
        assert field["externalDocs"]["url"] == SCHEMA_URL
    detail = resolve(document, {"$ref": "#/components/schemas/ModelVersionDetail"})
    assert detail["properties"]["status_reason"]["type"] == "string"
    assert "one line" in detail["properties"]["status_reason"]["description"]


def openapi_validator(document: dict, schema: dict) -> jsonschema.Draft4Validator:
    """OpenAPI 3.0 schema objects are JSON Schema draft 4 with extras; references resolve
    inside the document."""
    return jsonschema.Draft4Validator({**schema, "components": document["components"]})


def test_a_json_request_built_from_the_openapi_schema_is_accepted(
    api, model, registry_dirs, demo_tar
):
    document = openapi_document(api)
    allowed = registry_dirs / "allowed" / "demo.tar.gz"
    allowed.write_bytes(demo_tar.read_bytes())
    body = {
        "uri": str(allowed),
        "lineage": LINEAGE,
        "description": "from a generated client",
        "test_cases": [
            {
                "name": "extra",
                "model": "demo_ensemble",
                "inputs": {"RAW": RAW},
                "expected": {
                    "PROBABILITIES": {"data": [0.999735, 0.000264, 0.000001], "atol": 1e-4}
                },
            }
        ],
    }
    schema = request_schema(document, "application/json")
    openapi_validator(document, schema).validate(body)
    response = api.post(versions_url("iris"), body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["test_cases"] == body["test_cases"]


def test_a_multipart_request_built_from_the_openapi_schema_is_accepted(api, model, demo_tar):
    document = openapi_document(api)
    cases = [{"name": "extra", "inputs": {"RAW": RAW}}]
    values = {"lineage": LINEAGE, "test_cases": cases}
    schema = request_schema(document, "multipart/form-data")
    # The archive's bytes are no JSON value, so it is left out of this check.
    openapi_validator(document, {**schema, "required": []}).validate(values)
    # OpenAPI's default encoding of an object or array part of a multipart body: JSON.
    form = {name: json.dumps(value) for name, value in values.items()}
    response = api.post(
        versions_url("iris"),
        {**form, "archive": archives.upload(demo_tar)},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["test_cases"] == cases


def test_test_cases_outside_the_schema_are_refused_with_the_field(api, model, demo_tar):
    bad = [{"name": "c", "inputs": {"RAW": {**RAW, "datatype": "TYPE_FP32"}}}]
    assert not schema_validator("testCases").is_valid(bad)
    response = api.post(
        versions_url("iris"),
        {"archive": archives.upload(demo_tar), "test_cases": json.dumps(bad)},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "test_cases" and "TYPE_FP32" in response.json()["detail"]


# -- status_reason -----------------------------------------------------------------------------


def test_status_reason_is_one_bounded_line():
    assert status_reason_for(problems=[]) == ""
    one = status_reason_for(problems=[{"file": "m/config.pbtxt", "line": 4, "message": "Bad."}])
    assert one == "m/config.pbtxt, line 4: Bad."
    two = status_reason_for(
        problems=[
            {"file": "", "line": None, "message": "No\nmodel."},
            {"file": "x", "message": "y"},
        ]
    )
    assert two == "2 problems; first: No model."
    failed = status_reason_for(
        problems=[], failed_cases=[("a", "Y[0]: got 1, expected 2."), ("b", "")], total_cases=3
    )
    assert failed == "2 of 3 test cases failed; first: `a`: Y[0]: got 1, expected 2."
    long = status_reason_for(problems=[{"file": "f", "message": "x" * 2000}])
    assert len(long) == MAX_STATUS_REASON and long.endswith("…")


def test_an_invalid_version_says_why_in_one_line(api, model, registry_dirs):
    broken = archives.repository_archive(
        {
            "m/config.pbtxt": textwrap.dedent(
                """\
                name: "m"
                backend: "python"
                max_batch_size: 0
                input [ { name: "X" data_type: TYPE_FOO dims: [ 1 ] } ]
                output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
                """
            ),
            "m/1/model.py": "",
        },
        registry_dirs / "broken.tar.gz",
    )
    response = api.post(
        versions_url("iris"),
        {"archive": archives.upload(broken), "lineage": "{}"},
        format="multipart",
    )
    assert response.status_code == 201 and response.json()["status_reason"] == ""
    plans.version_validate(version_id=version_id(1))
    body = api.get(version_url("iris", 1)).json()
    assert body["status"] == VersionStatus.INVALID
    first = body["problems"][0]
    assert first["file"] == "m/config.pbtxt" and first["line"] == 4
    reason = body["status_reason"]
    assert "\n" not in reason and "TYPE_FOO" in reason
    prefix = f"{len(body['problems'])} problems; first: " if len(body["problems"]) > 1 else ""
    assert reason == f"{prefix}m/config.pbtxt, line 4: {first['message']}"


@pytest.mark.triton
def test_a_version_whose_tests_fail_says_which_case_and_why(api, model, demo_tar):
    wrong = {
        "name": "wrong",
        "inputs": {"RAW": RAW},
        "expected": {"PROBABILITIES": {"data": [0.1, 0.1, 0.8], "atol": 0.001}},
    }
    response = api.post(
        versions_url("iris"),
        {"archive": archives.upload(demo_tar), "test_cases": json.dumps([wrong])},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    plans.version_validate(version_id=version_id(1))
    plans.version_test(version_id=version_id(1))
    body = api.get(version_url("iris", 1)).json()
    assert body["status"] == VersionStatus.TEST_FAILED, body["problems"]
    assert body["status_reason"].startswith(
        "1 of 4 test cases failed: `wrong`: PROBABILITIES[0]: got 0.999"
    ), body["status_reason"]
    assert "expected 0.1" in body["status_reason"] and "atol=0.001" in body["status_reason"]


def test_a_step_that_gives_up_says_so_in_place_of_the_old_reason(api, model, demo_tar, settings):
    settings.BERTH_VERSION_MAX_ATTEMPTS = 2
    response = api.post(
        versions_url("iris"), {"archive": archives.upload(demo_tar)}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    version = ModelVersion.objects.get(pk=version_id(1))
    old = "1 of 1 test case failed: `old`: Y[0]: got 1, expected 2."
    ModelVersion.objects.filter(pk=version.pk).update(
        status=VersionStatus.TEST_FAILED, status_reason=old
    )
    Path(version.artifact_uri).unlink()  # the artifact store lost the file
    retry = reverse("registry-api:version-retry", kwargs={"name": "iris", "version": 1})
    assert api.post(retry).status_code == 202
    plans.version_test(version_id=version.pk)
    # The first attempt failed unexpectedly and waits for the next: the old reason is gone.
    body = api.get(version_url("iris", 1)).json()
    assert body["status"] == VersionStatus.VALIDATED and body["status_reason"] == ""
    Run.objects.filter(object_id=version.pk).update(not_before=None)
    plans.version_test(version_id=version.pk)
    body = api.get(version_url("iris", 1)).json()
    assert body["status"] == VersionStatus.TEST_FAILED
    assert body["status_reason"].startswith("Test gave up after 2 attempts: FileNotFoundError")
    assert body["status_reason"] == body["problems"][-1]["message"]


# -- the README's examples, registered and tested for real -------------------------------------


def readme_section() -> str:
    text = README.read_text()
    start = text.index("## Writing berth.yaml")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


SPECIES_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

SPECIES = ["setosa", "versicolor", "virginica"]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            names = pb_utils.get_input_tensor_by_name(request, "SPECIES").as_numpy()
            words = [n.decode() if isinstance(n, bytes) else str(n) for n in names.ravel()]
            index = np.array([SPECIES.index(w) for w in words], dtype=np.int64)
            label = np.array([f"Iris {w}".encode() for w in words], dtype=np.object_)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("INDEX", index), pb_utils.Tensor("LABEL", label)]
                )
            )
        return responses
"""


def test_the_readme_examples_follow_the_schema():
    section = readme_section()
    documents = fenced(section, "yaml")
    assert len(documents) == 2
    for text in documents:
        schema_validator().validate(yaml.safe_load(text))
    assert "/api/v1/schemas/berth.yaml.json" in section


@pytest.mark.triton
def test_the_readme_examples_register_validate_and_pass_on_triton(api, model, registry_dirs):
    demo_yaml, species_yaml = fenced(readme_section(), "yaml")
    (species_config,) = fenced(readme_section(), "pbtxt")

    demo = write_demo_repository(registry_dirs / "demo")
    (demo / "berth.yaml").write_text(demo_yaml)
    species = registry_dirs / "species"
    (species / "species_index" / "1").mkdir(parents=True)
    (species / "species_index" / "config.pbtxt").write_text(species_config)
    (species / "species_index" / "1" / "model.py").write_text(SPECIES_MODEL)
    (species / "berth.yaml").write_text(species_yaml)

    for number, (repository, cases) in enumerate(
        [
            (demo, ["setosa-like", "batch-of-two", "preprocess-standardizes"]),
            (species, ["names-to-classes"]),
        ],
        start=1,
    ):
        archive = build_tar_gz(repository, registry_dirs / f"{repository.name}.tar.gz").path
        response = api.post(
            versions_url("iris"),
            {"archive": archives.upload(archive), "lineage": "{}"},
            format="multipart",
        )
        assert response.status_code == 201, response.json()
        plans.version_validate(version_id=version_id(number))
        plans.version_test(version_id=version_id(number))
        body = api.get(version_url("iris", number)).json()
        assert body["status"] == VersionStatus.TESTED, (
            body["status_reason"],
            body["problems"],
            [r["message"] for r in body["test_results"]],
        )
        assert body["status_reason"] == ""
        results = {r["name"]: r["outcome"] for r in body["test_results"]}
        assert results == dict.fromkeys(cases, "passed")
