"""The data plane client against a real HTTP server on a real socket: the bearer token goes
with every admin call, and a refusal, a non-JSON answer or silence each become one error
saying what happened. The runtime client is built once per address, also from many threads."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from portal import aws
from portal.dataplane import DataPlaneClient, DataPlaneError, runtime_client


class Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
        if self.path.endswith("/missing/aliases"):
            body = {"ErrorCode": "EndpointNotFound", "Message": "no endpoint missing"}
            self._answer(404, json.dumps(body).encode())
        elif self.path.endswith("/broken/aliases"):
            self._answer(502, b"<html>bad gateway</html>", "text/html")
        elif self.path.endswith("/list/aliases"):
            self._answer(200, b"[1, 2]")
        else:
            self._answer(200, json.dumps({"aliases": {"demo": "demo_1.tar.gz"}}).encode())


@pytest.fixture
def server():
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_token_goes_with_every_call(server, settings):
    settings.BERTH_DATAPLANE_ADMIN_TOKEN = "the-token"
    assert DataPlaneClient(server).aliases("local-staging") == {
        "aliases": {"demo": "demo_1.tar.gz"}
    }
    assert Handler.seen == [
        {"path": "/admin/endpoints/local-staging/aliases", "auth": "Bearer the-token"}
    ]


def test_a_refusal_names_the_status_code_and_reason(server):
    with pytest.raises(DataPlaneError) as refused:
        DataPlaneClient(server, token="t").aliases("missing")
    assert str(refused.value) == (
        "GET /admin/endpoints/missing/aliases answered 404: EndpointNotFound: no endpoint missing"
    )
    assert (refused.value.status, refused.value.code) == (404, "EndpointNotFound")


def test_an_answer_that_is_not_a_json_object_is_an_error(server):
    with pytest.raises(DataPlaneError, match="answered 502: <html>bad gateway</html>"):
        DataPlaneClient(server, token="t").aliases("broken")
    with pytest.raises(DataPlaneError, match="not a JSON object"):
        DataPlaneClient(server, token="t").aliases("list")


def test_silence_is_an_error_that_says_so():
    with pytest.raises(DataPlaneError, match="did not answer GET") as silent:
        DataPlaneClient("http://127.0.0.1:9", token="t").aliases("local-staging")
    assert silent.value.status is None


def test_names_cannot_change_the_path(server):
    DataPlaneClient(server, token="t").aliases("../status")
    assert Handler.seen[-1]["path"] == "/admin/endpoints/..%2Fstatus/aliases"


def test_one_runtime_client_per_address_even_when_threads_race(settings):
    url = "http://127.0.0.1:1/race"
    with ThreadPoolExecutor(8) as pool:
        built = set(pool.map(lambda _: id(runtime_client(url)), range(16)))
    assert len(built) == 1
    assert runtime_client(url) is runtime_client(url + "/")
    assert runtime_client(url) is not runtime_client("http://127.0.0.1:2")
    assert runtime_client(url).meta.endpoint_url == url
    # The AWS clients services use are new each time (moto patches clients made in a test).
    assert aws.client("s3") is not aws.client("s3")
