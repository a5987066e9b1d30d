"""What the service's gate costs per request: request id, API key check, rate limit, security headers,
Prometheus metrics and the JSON access log, in microseconds.

Run by hand from the project root on an otherwise idle machine (never in CI):
    python benchmarks/serve_overhead.py [--model pretrained:fast] [--requests 3000] [--out reports/benchmarks/serve_overhead.json]

Calls the ASGI app in this process (no sockets, no HTTP parsing, so only the app's own work is
timed) with GET /v1/model, whose handler does almost nothing, in four setups: a bare FastAPI app
with the same handler (the floor), ferlab's app without keys, with keys, and with keys and the
access log written (to /dev/null). The differences are the gate's cost per request.
"""

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

OUT = Path("reports/benchmarks/serve_overhead.json")
KEY = "bench-0123456789abcdef0123456789"


def scope(path: str, headers: dict) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def timed(app, path: str, headers: dict, requests: int) -> list[float]:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    times = []
    for _ in range(requests):
        started = time.perf_counter()
        await app(scope(path, headers), receive, send)
        times.append(time.perf_counter() - started)
    if set(statuses) != {200}:
        raise SystemExit(f"{path} answered {sorted(set(statuses))}, not only 200")
    return times


async def measure(app, headers: dict, requests: int) -> dict:
    async with app.router.lifespan_context(app):
        service = getattr(app.state, "service", None)
        while service is not None and not service.ready:
            if service.load_error:
                raise SystemExit(service.load_error)
            await asyncio.sleep(0.1)
        await timed(app, "/v1/model", headers, 200)  # warm-up
        times = await timed(app, "/v1/model", headers, requests)
    us = sorted(t * 1e6 for t in times)
    return {"median_us": round(statistics.median(us), 1), "p90_us": round(us[int(0.9 * (len(us) - 1))], 1), "requests": requests}


def bare_app(info: dict):
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/model")
    async def model() -> dict:
        return info

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained:fast")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    from ferlab.inference.predict import EmotionRecognizer
    from ferlab.serve.access import ApiKeys
    from ferlab.serve.app import create_app
    from ferlab.serve.model_info import describe
    from ferlab.serve.service import ServiceSettings

    recognizer = EmotionRecognizer.load(args.model)
    info = describe(args.model)
    keys = ApiKeys({KEY: "bench"})
    access_log = logging.getLogger("ferlab.access")
    access_log.propagate = False
    access_log.handlers[:] = [logging.FileHandler(os.devnull)]

    def app(**settings):
        return create_app(recognizer, model_info=info, settings=ServiceSettings(**settings))

    setups = []
    access_log.setLevel(logging.WARNING)
    setups.append(("bare FastAPI, same handler", bare_app({**info, "limits": {}}), {}))
    setups.append(("ferlab, no keys, no access log", app(), {}))
    setups.append(("ferlab, API key, no access log", app(api_keys=keys), {"Authorization": f"Bearer {KEY}"}))
    results = {}
    for name, built, headers in setups:
        results[name] = asyncio.run(measure(built, headers, args.requests))
    access_log.setLevel(logging.INFO)
    results["ferlab, API key, access log"] = asyncio.run(measure(app(api_keys=keys), {"Authorization": f"Bearer {KEY}"}, args.requests))
    floor = results["bare FastAPI, same handler"]["median_us"]
    for result in results.values():
        result["over_bare_us"] = round(result["median_us"] - floor, 1)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "what": "GET /v1/model through the ASGI app in-process: the cost of ferlab's gate per request",
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "model": args.model,
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'setup':<34} {'median us':>9} {'p90 us':>8} {'over bare':>9}")
    for name, r in results.items():
        print(f"{name:<34} {r['median_us']:>9} {r['p90_us']:>8} {r['over_bare_us']:>9}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
