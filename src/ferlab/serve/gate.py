"""What every request goes through before and after its endpoint: a request id, the API key (when
the server has keys), the client's rate limit, then, on the way out, the security headers, the
metrics and one JSON line of access log.

A plain ASGI middleware: Starlette's BaseHTTPMiddleware would add a task and a stream per request.
"""

import json
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse

from ferlab.serve import access

OPEN_PATHS = ("/healthz", "/readyz", "/", "/docs", "/openapi.json", "/favicon.ico")  # no key needed
OPEN_PREFIXES = ("/static/", "/docs-assets/")
RATE_LIMITED = {"/v1/predict": "predict", "/v1/explain": "explain"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
access_log = logging.getLogger("ferlab.access")


class Gate:
    def __init__(self, app, service, limits: access.RateLimits, routes: set[str]):
        self.app = app
        self.keys = service.settings.api_keys
        self.metrics = service.metrics
        self.limits = limits
        self.routes = routes  # the app's route paths: the metrics' `route` label, never a client's path

    def route_of(self, path: str) -> str:
        if path in self.routes:
            return path
        return next((p.rstrip("/") for p in OPEN_PREFIXES if path.startswith(p)), "other")

    def refusal(self, scope, headers: Headers, path: str, method: str, client: str):
        """The 401 or 429 a request gets before its endpoint, or None; the key's name goes in the request's state."""
        key = None
        if self.keys and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES) and method != "OPTIONS":
            key = self.keys.check(headers.get("authorization"))
            if key is None:
                said = "a wrong API key" if headers.get("authorization") else "no API key"
                return JSONResponse(
                    {"detail": f"this server needs an API key and the request carried {said}; send `Authorization: Bearer <key>`."},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="ferlab"'},
                )
        scope["state"]["key"] = key
        if path in RATE_LIMITED and method == "POST":
            wait = self.limits.hit(RATE_LIMITED[path], f"key:{key}" if key else f"ip:{client}")
            if wait is not None:
                return JSONResponse(
                    {"detail": f"too many requests from this client; retry in {wait:.0f} s."},
                    status_code=429,
                    headers={"Retry-After": f"{wait:.0f}"},
                )
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        client = scope["client"][0] if scope.get("client") else "unknown"
        path, method = scope["path"], scope["method"]
        status = 500

        async def answer(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = MutableHeaders(scope=message)
                for name, value in access.SECURITY_HEADERS.items():
                    out.setdefault(name, value)
                if path not in ("/", "/docs") and not path.startswith(OPEN_PREFIXES):
                    out.setdefault("Content-Security-Policy", access.API_POLICY)
                    out.setdefault("Cache-Control", "no-store")
                out["X-Request-ID"] = request_id
            await send(message)

        try:
            refused = self.refusal(scope, headers, path, method, client)
            if refused is not None:
                await refused(scope, receive, answer)
            else:
                await self.app(scope, receive, answer)
        finally:
            seconds = time.perf_counter() - started
            route = self.route_of(path)
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    json.dumps(
                        {
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
                            "request_id": request_id,
                            "client": client,
                            "key": state.get("key"),
                            "method": method,
                            "path": path,
                            "status": status,
                            "ms": round(seconds * 1000, 1),
                            "faces": state.get("faces"),
                            "model_version": state.get("model_version"),
                        }
                    )
                )
