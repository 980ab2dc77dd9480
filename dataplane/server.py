"""The gateway's HTTP API: the SageMaker runtime's invocation route, admin and metrics.

`POST /endpoints/{endpoint}/invocations` is the path botocore's `invoke_endpoint` posts to
(the TargetModel parameter travels in `X-Amzn-SageMaker-Target-Model`), so a
`boto3.client("sagemaker-runtime", endpoint_url=...)` works against this server unchanged.

A request for a loaded model takes the fast path: it is written to a kept-alive Triton
connection and answered from that connection's callback, with no task or future per
request. Everything else (a miss, a Triton restart, no idle connection) runs the same
logic as a coroutine.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import signal
import time
from typing import Any

from dataplane.errors import (
    GatewayError,
    ScrubContext,
    ServedModel,
    error_class,
    insufficient_memory,
    is_out_of_memory,
    model_error,
    scrub_error,
    service_unavailable,
    validation_error,
)
from dataplane.gateway import Endpoint, Gateway, LoadedModel
from dataplane.httpserver import (
    AsyncHandler,
    HttpConnection,
    HttpRequest,
    HttpResponse,
    HttpServer,
    Router,
    json_response,
)
from dataplane.metrics import MetricsError
from dataplane.payload import (
    SAGEMAKER_BINARY_TYPE,
    check_inference_request,
    decode_body,
    sagemaker_json_length,
)
from dataplane.stores import check_name, is_package_name
from dataplane.supervisor import error_text
from dataplane.upstream import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

log = logging.getLogger(__name__)

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"
_TARGET_KEY = TARGET_MODEL_HEADER.lower()
_VARIANT_HEADER = "X-Amzn-Invoked-Production-Variant"
# The JSON part's length when a body (a request's or Triton's answer) carries binary tensors:
# the one request header Triton needs besides Content-Type. A Content-Encoding is decoded here
# (dataplane.payload), so Triton receives the body it is checked as.
_JSON_LENGTH_KEY = "inference-header-content-length"
_JSON_LENGTH_HEADER = "Inference-Header-Content-Length"
_ENCODING_KEY = "content-encoding"
# How Triton's HTTP frontend words a body it cannot parse as a KServe v2 JSON request.
_PARSE_FAILURES = ("failed to parse the request JSON buffer", "Unable to parse ")


def error_response(error: GatewayError) -> HttpResponse:
    return HttpResponse(error.status, error.body(), error.headers())


def _too_large(length: int | None, limit: int) -> GatewayError:
    size = f"{length} bytes" if length is not None else "the request body"
    return validation_error(
        f"Request payload too large: {size} exceeds the limit of {limit} bytes.",
        status=413,
        error_code="PayloadTooLarge",
    )


def served_model(model: LoadedModel) -> ServedModel:
    """The names `model` is served under, each with the model's own name in its package."""
    prefix = model.prefix
    names = {
        name: name[len(prefix) :] if prefix and name.startswith(prefix) else name
        for name in model.served_names
    }
    names[model.served_name] = model.model_name or names.get(model.served_name, model.served_name)
    return ServedModel(model.served_name, names, prefix)


def scrubbed(
    error: GatewayError, gateway: Gateway, endpoint: Endpoint, target: str | None
) -> GatewayError:
    """`error` about `target` as a client may read it (`dataplane.errors.scrub_message`).

    A package that failed to load has no served names yet: its prefix stands for them.
    """
    try:
        served = None
        if target is not None:
            model = endpoint.loaded.get(target)
            if model is not None:
                served = served_model(model)
            else:
                served = ServedModel(None, {}, endpoint.prefix(target))
        context = ScrubContext(
            target,
            served,
            str(gateway.repository),
            str(gateway.work_dir),
            endpoint.store_location,
        )
        return scrub_error(error, context)
    except Exception:  # The client still gets its answer, without the unchecked text.
        log.exception("scrubbing an error about %s on %s failed", target, endpoint.name)
        extra = {k: v for k, v in error.extra.items() if k != "OriginalMessage"}
        return GatewayError(
            error.status,
            error.error_type,
            f"{error.error_type} for {target or 'the request'} on endpoint {endpoint.name}.",
            error_code=error.error_code,
            extra=extra,
        )


def _triton_error(response: UpstreamResponse, target: str) -> GatewayError:
    reason = error_text(response)
    if reason.startswith(_PARSE_FAILURES):
        # Triton answers an unparsable body with 500; it is the client's mistake.
        return validation_error(
            f"The request body is not a valid KServe v2 inference request: {reason}",
            error_code="MalformedRequest",
        )
    if response.status >= 500 and is_out_of_memory(reason):
        return insufficient_memory(f"{target}: {reason}")
    # SageMaker's Triton answers every failed inference with 400 (507 when out of memory:
    # `SagemakeInferRequestClass::InferResponseComplete` in Triton's sagemaker_server.cc),
    # whatever status its KServe frontend would give; CloudWatch then counts it as a 4XX.
    return model_error(400, reason, model_name=target)


class InvocationHandler:
    """`POST /endpoints/{endpoint}/invocations`: resolve, (load), proxy, record metrics."""

    def __init__(self, gateway: Gateway, server: HttpServer) -> None:
        self.gateway = gateway
        self.server = server
        self.supervisor = gateway.supervisor
        self.metrics = gateway.metrics
        self.infer_timeout = gateway.settings.infer_timeout
        self.max_body = gateway.settings.max_request_bytes
        # Fast-path requests under way and their deadlines; one sweeper enforces them all,
        # cheaper than a timer per request.
        self._waiting: dict[UpstreamConnection, float] = {}
        self._sweeper: asyncio.Future[None] | None = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for upstream, deadline in list(self._waiting.items()):
                if deadline < now:
                    upstream.timeout()

    # -- fast path --------------------------------------------------------------------------

    def __call__(self, connection: HttpConnection, request: HttpRequest) -> None:
        started = time.perf_counter()
        name = request.params["segment"]
        endpoint = self.gateway.endpoints.get(name)
        if endpoint is None:
            error = validation_error(f"Endpoint {name} not found.", error_code="EndpointNotFound")
            connection.respond(error.status, error.body(), error.headers())
            return
        try:
            header = request.headers.get(_TARGET_KEY)
            if not header:
                raise validation_error(
                    f"Endpoint {endpoint.name} is a multi-model endpoint: the request needs "
                    f"the {TARGET_MODEL_HEADER} header.",
                    error_code="MissingTargetModel",
                )
            target = endpoint.resolve(header)
        except GatewayError as error:
            self._answer_error(connection, endpoint, None, started, error, None)
            return
        request_headers = request.headers
        body = request.body
        json_length = request_headers.get(_JSON_LENGTH_KEY)
        content_type = request_headers.get("content-type", "application/json")
        try:
            encoding = request_headers.get(_ENCODING_KEY)
            if encoding is not None and encoding.lower() not in ("", "identity"):
                body = decode_body(body, encoding, self.max_body)
            if SAGEMAKER_BINARY_TYPE in content_type:
                # SageMaker's way to send binary tensors (boto3 sets no other header):
                # Triton's KServe frontend takes the same length from its own header.
                json_length = sagemaker_json_length(content_type, len(body), json_length)
            # Before Triton sees it (and before a miss loads the model): the shapes must be
            # ones the body fills.
            check_inference_request(body, json_length)
        except GatewayError as error:
            self._answer_error(connection, endpoint, target, started, error, None)
            return
        headers = {"Content-Type": content_type}
        if json_length is not None:
            headers[_JSON_LENGTH_HEADER] = json_length
        supervisor = self.supervisor
        model = endpoint.loaded.get(target)
        pool = supervisor.pool
        if model is not None and model.generation == supervisor.generation and pool is not None:
            upstream = pool.acquire_idle()
            if upstream is not None:
                self._send(
                    connection,
                    endpoint,
                    target,
                    model,
                    pool,
                    upstream,
                    body,
                    headers,
                    started,
                )
                return
        self.server.spawn(self._slow(connection, endpoint, target, body, headers, started, True))

    def _send(
        self,
        connection: HttpConnection,
        endpoint: Endpoint,
        target: str,
        model: LoadedModel,
        pool: UpstreamPool,
        upstream: UpstreamConnection,
        body: bytes,
        headers: dict[str, str],
        started: float,
    ) -> None:
        model.in_flight += 1
        model.last_used = now = time.time()
        waiting = self._waiting
        waiting[upstream] = now + self.infer_timeout
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        sent = time.perf_counter()

        def answered(response: UpstreamResponse | None, error: UpstreamError | None) -> None:
            waiting.pop(upstream, None)
            model.in_flight -= 1
            if response is None:
                upstream.close()
                if error is not None and not error.sent:
                    self.server.spawn(
                        self._slow(connection, endpoint, target, body, headers, started, False)
                    )
                    return
                if error is not None and error.timed_out:
                    failure = model_error(
                        504,
                        f"the model did not answer within {self.infer_timeout:.0f}s",
                        model_name=target,
                    )
                else:
                    failure = self._triton_gone(target, error)
                self._answer_error(connection, endpoint, target, started, failure, True)
                return
            pool.release(upstream)
            model_us = (time.perf_counter() - sent) * 1e6
            model.invocations += 1
            try:
                self._answer(
                    connection, endpoint, target, model, started, response, model_us, True, headers
                )
            except Exception as exc:  # Never leave the client without an answer.
                log.exception("answering %s on %s failed", target, endpoint.name)
                failure = GatewayError(500, "InternalFailure", f"internal error: {exc}")
                failure = scrubbed(failure, self.gateway, endpoint, target)
                connection.respond(failure.status, failure.body(), failure.headers())

        upstream.request_with_callback(
            pool.encode("POST", model.infer_path, body, headers), answered
        )

    def _answer(
        self,
        connection: HttpConnection,
        endpoint: Endpoint,
        target: str,
        model: LoadedModel,
        started: float,
        response: UpstreamResponse,
        model_us: float,
        cache_hit: bool,
        request_headers: dict[str, str],
    ) -> None:
        if response.status != 200:
            error = _triton_error(response, target)
            self._answer_error(connection, endpoint, target, started, error, cache_hit)
            return
        out = {
            "Content-Type": response.headers.get("content-type", "application/json"),
            _VARIANT_HEADER: "AllTraffic",
        }
        body = response.body
        served_key, model_key = model.answer_renaming
        json_length = response.headers.get(_JSON_LENGTH_KEY)
        if json_length is None:
            # Triton writes "model_name" first: the first match is the answer's own.
            body = body.replace(served_key, model_key, 1)
        else:
            # Binary tensor extension: rename inside the JSON header only, and say its length
            # the way the request said its own; a request that did not (JSON, or SageMaker's
            # binary content type) is answered as SageMaker's Triton answers: in the
            # Content-Type (src/sagemaker_server.cc, SetResponseHeader).
            split = int(json_length)
            header = body[:split].replace(served_key, model_key, 1)
            body = header + body[split:]
            if _JSON_LENGTH_HEADER in request_headers and not request_headers[
                "Content-Type"
            ].startswith(SAGEMAKER_BINARY_TYPE):
                out[_JSON_LENGTH_HEADER] = str(len(header))
            else:
                out["Content-Type"] = f"{SAGEMAKER_BINARY_TYPE}{len(header)}"
        # Recorded before answering: the answer wakes the client (see HttpConnection.respond).
        self._record(endpoint, target, started, model_us, cache_hit, 2)
        connection.respond(200, body, out)

    def _answer_error(
        self,
        connection: HttpConnection,
        endpoint: Endpoint,
        target: str | None,
        started: float,
        error: GatewayError,
        cache_hit: bool | None,
    ) -> None:
        error = scrubbed(error, self.gateway, endpoint, target)
        self._record(endpoint, target, started, 0.0, cache_hit, error_class(error.status, error))
        connection.respond(error.status, error.body(), error.headers())

    def _triton_gone(self, target: str, error: UpstreamError | None) -> GatewayError:
        return service_unavailable(
            f"Triton stopped while serving the request for {target}; it is being restarted. "
            f"Retry the request. ({error})"
        )

    # -- slow path: misses, restarts, new connections ---------------------------------------

    async def _slow(
        self,
        connection: HttpConnection,
        endpoint: Endpoint,
        target: str,
        body: bytes,
        headers: dict[str, str],
        started: float,
        may_retry: bool,
    ) -> None:
        gateway = self.gateway
        supervisor = self.supervisor
        cache_hit = True
        try:
            for attempt in range(2):
                model = endpoint.loaded.get(target)
                if model is None or model.generation != supervisor.generation:
                    outcome = await gateway.ensure_loaded(endpoint, target)
                    model = outcome.model
                    cache_hit = cache_hit and outcome.cache_hit
                model.in_flight += 1
                model.last_used = time.time()
                sent = time.perf_counter()
                retry = False
                try:
                    response = await supervisor.request(
                        "POST", model.infer_path, body, headers, self.infer_timeout
                    )
                except UpstreamError as exc:
                    if exc.sent or (attempt > 0 and may_retry):
                        raise self._triton_gone(target, exc) from exc
                    retry = True
                except TimeoutError as exc:
                    raise model_error(
                        504,
                        f"the model did not answer within {self.infer_timeout:.0f}s",
                        model_name=target,
                    ) from exc
                finally:
                    model.in_flight -= 1
                if retry:
                    # Triton was not there to take the request: after its restart the model
                    # is loaded again on demand and the request goes through.
                    await supervisor.wait_ready(gateway.settings.load_timeout)
                    cache_hit = False
                    may_retry = True
                    continue
                model_us = (time.perf_counter() - sent) * 1e6
                model.invocations += 1
                self._answer(
                    connection,
                    endpoint,
                    target,
                    model,
                    started,
                    response,
                    model_us,
                    cache_hit,
                    headers,
                )
                return
            raise service_unavailable(f"Triton is restarting; retry the request for {target}.")
        except GatewayError as error:
            self._answer_error(connection, endpoint, target, started, error, cache_hit)
        except Exception as exc:
            log.exception("invocation of %s on %s failed", target, endpoint.name)
            failure = GatewayError(500, "InternalFailure", f"internal error: {exc}")
            self._answer_error(connection, endpoint, target, started, failure, None)

    def _record(
        self,
        endpoint: Endpoint,
        target: str | None,
        started: float,
        model_us: float,
        cache_hit: bool | None,
        status_class: int,
    ) -> None:
        overhead_us = max((time.perf_counter() - started) * 1e6 - model_us, 0.0)
        minute = int(time.time() // 60)
        metrics = self.metrics
        metrics.maybe_prune(minute)
        metrics.record_invocation(
            endpoint.invocation_series(metrics, target),
            minute,
            status_class,
            cache_hit,
            model_us,
            overhead_us,
        )


# -- health, admin, metrics ---------------------------------------------------------------


def _body_object(request: HttpRequest) -> dict[str, Any]:
    try:
        data = request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise validation_error(f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise validation_error("the body must be a JSON object")
    return data


class AdminApi:
    """Health, the admin API the portal uses, and metrics reads."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _endpoint(self, request: HttpRequest) -> Endpoint:
        return self.gateway.endpoint(request.params["endpoint"])

    async def ping(self, request: HttpRequest) -> HttpResponse:
        if self.gateway.supervisor.ready:
            return json_response({"status": "Healthy"})
        return json_response({"status": "Restarting"}, status=503)

    async def status(self, request: HttpRequest) -> HttpResponse:
        """The gateway's own state: its Triton process, restarts, whether a GPU is used."""
        gateway = self.gateway
        supervisor = gateway.supervisor
        pool = supervisor.pool
        return json_response(
            {
                "triton": {
                    "pid": supervisor.pid,
                    "http_url": _upstream_url(pool),
                    "ready": supervisor.ready,
                    "generation": supervisor.generation,
                    "restarts": supervisor.restarts,
                },
                "gpu": gateway.gpu,
                "endpoints": sorted(gateway.endpoints),
                # Collector pauses stop the event loop: how many, and what is exempt.
                "python_gc": {
                    "frozen_objects": gc.get_freeze_count(),
                    "collections": [stats["collections"] for stats in gc.get_stats()],
                },
            }
        )

    async def list_endpoints(self, request: HttpRequest) -> HttpResponse:
        gateway = self.gateway
        endpoints = [ep.as_json(gateway.gpu) for _, ep in sorted(gateway.endpoints.items())]
        return json_response({"endpoints": endpoints})

    async def put_endpoint(self, request: HttpRequest) -> HttpResponse:
        data = _body_object(request)
        store = data.get("store")
        budget = data.get("memory_budget_bytes")
        if store is not None and (not isinstance(store, str) or not store):
            raise validation_error("store must be a folder or an s3:// URI")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)):
            raise validation_error("memory_budget_bytes must be an integer")
        endpoint, created = await self.gateway.put_endpoint(
            request.params["endpoint"], store=store, budget_bytes=budget
        )
        return json_response(endpoint.as_json(self.gateway.gpu), status=201 if created else 200)

    async def list_models(self, request: HttpRequest) -> HttpResponse:
        endpoint = self._endpoint(request)
        models = sorted(endpoint.loaded.values(), key=lambda m: m.last_used, reverse=True)
        return json_response(
            {
                "endpoint": endpoint.name,
                "memory_budget_bytes": endpoint.budget_bytes,
                "memory_used_bytes": endpoint.used_bytes(self.gateway.gpu),
                "models": [m.as_json() for m in models],
            }
        )

    async def load_model(self, request: HttpRequest) -> HttpResponse:
        endpoint = self._endpoint(request)
        target = endpoint.resolve(request.params["target_model"])
        try:
            outcome = await self.gateway.ensure_loaded(endpoint, target)
        except GatewayError as error:  # The portal shows it to the package's owner.
            raise scrubbed(error, self.gateway, endpoint, target) from error
        return json_response(
            {
                "target_model": target,
                "served_model": outcome.model.served_name,
                "cache_hit": outcome.cache_hit,
                "size_bytes": outcome.model.rss_bytes,
                "gpu_bytes": outcome.model.gpu_bytes,
                "loading_wait_time_us": round(outcome.wait_us),
                "downloading_time_us": round(outcome.downloading_us),
                "loading_time_us": round(outcome.loading_us),
            }
        )

    async def unload_model(self, request: HttpRequest) -> HttpResponse:
        endpoint = self._endpoint(request)
        target = endpoint.resolve(request.params["target_model"])
        unloading_us = await self.gateway.unload(endpoint, target)
        if unloading_us is None:
            raise validation_error(
                f"{target} is not loaded on endpoint {endpoint.name}.",
                status=404,
                error_code="NotLoaded",
            )
        return json_response(
            {"target_model": target, "unloaded": True, "unloading_time_us": round(unloading_us)}
        )

    async def list_aliases(self, request: HttpRequest) -> HttpResponse:
        endpoint = self._endpoint(request)
        return json_response({"endpoint": endpoint.name, "aliases": endpoint.aliases()})

    async def put_alias(self, request: HttpRequest) -> HttpResponse:
        endpoint = self._endpoint(request)
        model = request.params["model"]
        data = _body_object(request)
        target = data.get("target_model")
        if check_name(model) is not None or is_package_name(model):
            raise validation_error(f"alias name {model!r} must be a model name, not a package")
        if not isinstance(target, str) or check_name(target) or not is_package_name(target):
            raise validation_error(
                "target_model must be a package name such as <model>_<version>.tar.gz"
            )
        exists = await asyncio.to_thread(endpoint.store.exists, target)
        if not exists:
            raise validation_error(
                f"{target} is not in the model store of endpoint {endpoint.name}.",
                status=404,
                error_code="ModelNotFound",
            )
        aliases = await asyncio.to_thread(endpoint.set_alias, model, target)
        return json_response(
            {"endpoint": endpoint.name, "model": model, "target_model": target, "aliases": aliases}
        )

    async def endpoint_metrics(self, request: HttpRequest) -> HttpResponse:
        endpoint = self._endpoint(request)
        query = request.query_params()
        target = query.get("target_model")
        dims = endpoint.model_dims(endpoint.resolve(target)) if target else endpoint.dimensions
        body: dict[str, Any] = {
            "MetricDataQueries": [
                {
                    "Id": "m1",
                    "MetricStat": {
                        "Metric": {
                            "MetricName": query.get("metric", "Invocations"),
                            "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
                        },
                        "Period": query.get("period", "60"),
                        "Stat": query.get("stat", "Sum"),
                    },
                }
            ],
            "ScanBy": query.get("scan_by", "TimestampAscending"),
        }
        if "start" in query:
            body["StartTime"] = query["start"]
        if "end" in query:
            body["EndTime"] = query["end"]
        return json_response(self.gateway.metrics.get_metric_data(body))

    async def endpoint_counters(self, request: HttpRequest) -> HttpResponse:
        """Cumulative counts since the gateway started (invocations, cache lookups and hits,
        model loads, 4XX/5XX): a load test reads them before and after each stage, which
        the per-minute statistics are too coarse for."""
        endpoint = self._endpoint(request)
        metrics, dims = self.gateway.metrics, endpoint.dimensions
        cache = metrics.series("ModelCacheHit", dims)
        return json_response(
            {
                "endpoint": endpoint.name,
                "invocations": metrics.series("Invocations", dims).total_count,
                "cache_lookups": cache.total_count,
                "cache_hits": int(cache.total_sum),
                "model_loads": metrics.series("ModelLoadingTime", dims).total_count,
                "errors_4xx": int(metrics.series("Invocation4XXErrors", dims).total_sum),
                "errors_5xx": int(metrics.series("Invocation5XXErrors", dims).total_sum),
            }
        )

    async def metric_data(self, request: HttpRequest) -> HttpResponse:
        return json_response(self.gateway.metrics.get_metric_data(_body_object(request)))

    async def prometheus(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(
            200,
            self.gateway.metrics.prometheus_text().encode(),
            {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


def _upstream_url(pool: UpstreamPool | None) -> str | None:
    if pool is None:
        return None
    unix_path = getattr(pool, "unix_path", None)
    return f"unix:{unix_path}" if unix_path else f"http://{pool.host}:{pool.port}"


def map_error(exc: Exception) -> HttpResponse | None:
    if isinstance(exc, GatewayError):
        return error_response(exc)
    if isinstance(exc, MetricsError):
        return error_response(validation_error(str(exc)))
    return None


def require_token(token: str | None, handler: AsyncHandler) -> AsyncHandler:
    """`handler`, answering 401 unless the request carries `Authorization: Bearer <token>`.

    There is no open mode: every local process (model code included, were it not
    sandboxed) could otherwise place models and switch what serves.
    """
    if not token:
        raise ValueError("the data plane's admin API needs an admin token")
    expected = f"Bearer {token}".encode()

    async def guarded(request: HttpRequest) -> HttpResponse:
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            response = error_response(
                GatewayError(
                    401,
                    "Unauthorized",
                    "The admin API needs Authorization: Bearer <the gateway's admin token>.",
                )
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    return guarded


def build_server(gateway: Gateway) -> HttpServer:
    """The HTTP server with every route of the gateway.

    Invocations, `/ping` and `/metrics` are open, as on a SageMaker container; the admin
    routes always ask for the admin token (a gateway without one is refused here).
    """
    router = Router()
    settings = gateway.settings
    limit = settings.max_request_bytes
    server = HttpServer(
        router,
        max_body=limit,
        too_large=lambda length: error_response(_too_large(length, limit)),
        error_mapper=map_error,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        keep_alive_timeout=settings.keep_alive_timeout,
        max_connections=settings.max_connections,
        overloaded=lambda: error_response(
            service_unavailable(
                f"The gateway serves {settings.max_connections} connections at once; retry."
            )
        ),
    )
    router.add_direct("POST", "/endpoints/", "/invocations", InvocationHandler(gateway, server))
    admin = AdminApi(gateway)
    router.add("GET", "/ping", admin.ping)
    token = gateway.settings.admin_token

    def admin_route(method: str, pattern: str, handler: AsyncHandler) -> None:
        router.add(method, pattern, require_token(token, handler))

    admin_route("GET", "/admin/status", admin.status)
    admin_route("GET", "/admin/endpoints", admin.list_endpoints)
    admin_route("PUT", "/admin/endpoints/{endpoint}", admin.put_endpoint)
    admin_route("GET", "/admin/endpoints/{endpoint}/models", admin.list_models)
    admin_route("POST", "/admin/endpoints/{endpoint}/models/{target_model}/load", admin.load_model)
    admin_route(
        "POST", "/admin/endpoints/{endpoint}/models/{target_model}/unload", admin.unload_model
    )
    admin_route("GET", "/admin/endpoints/{endpoint}/aliases", admin.list_aliases)
    admin_route("PUT", "/admin/endpoints/{endpoint}/aliases/{model}", admin.put_alias)
    admin_route("GET", "/admin/endpoints/{endpoint}/metrics", admin.endpoint_metrics)
    admin_route("GET", "/admin/endpoints/{endpoint}/counters", admin.endpoint_counters)
    admin_route("POST", "/admin/metric-data", admin.metric_data)
    router.add("GET", "/metrics", admin.prometheus)
    return server


async def serve(gateway: Gateway, host: str, port: int) -> None:
    """Start the gateway (and its Triton), serve until SIGINT/SIGTERM, then stop both."""
    await gateway.start()
    loop = asyncio.get_running_loop()
    server = build_server(gateway)
    # Everything made so far (modules, protobuf descriptors, boto3's models: some 50,000
    # objects) lives as long as the process. Left to the collector, every full collection
    # would scan them all, stopping the event loop for 20 to 50 ms here; frozen, a full
    # collection scans only what serving created.
    gc.collect()
    gc.freeze()
    # A connection has asyncio's protocol methods without deriving from asyncio.Protocol
    # (a compiled class cannot derive from an interpreted one: dataplane.native).
    protocol: Any = server.protocol
    listener = await loop.create_server(protocol, host, port, backlog=1024)
    log.info("gateway listening on http://%s:%d", host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()
        server.close()
        await gateway.stop()
