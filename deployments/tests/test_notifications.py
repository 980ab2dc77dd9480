"""Notifications: email through Django's mail backend, webhooks signed with HMAC-SHA256,
received by a real HTTP server that checks the signature the way a receiver would."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail

from deployments import notifications, services

from .factories import packaged_version, queue_answer, run, sagemaker_endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    received: list[tuple[dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_signature_is_hmac_sha256_of_the_body():
    body = b'{"event": "x"}'
    signature = notifications.sign(body, "s3cret")
    assert signature == "sha256=" + __import__("hmac").new(b"s3cret", body, "sha256").hexdigest()
    assert notifications.verify(body, "s3cret", signature)
    assert not notifications.verify(body + b" ", "s3cret", signature)


def test_promotion_request_emails_approvers_and_posts_a_signed_webhook(
    settings, receiver, scientist, approver, aws, django_capture_on_commit_callbacks
):
    url, received = receiver
    settings.BERTH_WEBHOOK_URLS = [url]
    settings.BERTH_WEBHOOK_SECRET = "s3cret"
    staging = sagemaker_endpoint("sm-staging", "staging")
    production = sagemaker_endpoint("sm-production", "production")
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    run(services.deployment_start(actor=scientist, endpoint=staging, version=version))

    with django_capture_on_commit_callbacks(execute=True):
        promotion = services.promotion_request_create(
            actor=scientist, version=version, target_endpoint=production, comment="go"
        )
    assert [m.to for m in mail.outbox] == [[approver.email]]
    assert f"/approvals/{promotion.pk}/" in mail.outbox[0].body
    headers, body = received[0]
    assert headers["X-Berth-Event"] == "promotion.requested"
    assert notifications.verify(body, "s3cret", headers["X-Berth-Signature"])
    payload = json.loads(body)
    assert payload["data"]["target_endpoint"] == "sm-production"
    assert payload["data"]["requested_by"] == scientist.username


def test_failed_deployment_webhook_and_email(
    settings, receiver, scientist, aws, django_capture_on_commit_callbacks
):
    url, received = receiver
    settings.BERTH_WEBHOOK_URLS = [url]
    settings.BERTH_WEBHOOK_SECRET = "k"
    staging = sagemaker_endpoint("sm-staging", "staging")
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0], scale=3.0)
    with django_capture_on_commit_callbacks(execute=True):
        failed = run(services.deployment_start(actor=scientist, endpoint=staging, version=version))
    assert failed.state == "failed"
    assert mail.outbox[0].to == [scientist.email]
    headers, body = received[-1]
    assert headers["X-Berth-Event"] == "deployment.failed"
    assert json.loads(body)["data"]["error"] == failed.error
    assert notifications.verify(body, "k", headers["X-Berth-Signature"])


def test_unreachable_webhook_does_not_raise(settings):
    settings.BERTH_WEBHOOK_URLS = ["http://127.0.0.1:9/hook"]
    settings.BERTH_WEBHOOK_TIMEOUT_SECONDS = 1
    outcome = notifications.webhook_send("test", {"a": 1})
    assert "error" in outcome[0]
