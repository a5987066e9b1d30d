"""`ferlab serve` as a networked service: API keys, rate limits, headers, caps, /metrics, JSON access
logs, and models swapped live (a promote and a rollback under load, a reload that fails)."""

import http.client
import json
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from integration.conftest import free_port
from integration.serving import astronaut_scene, serve_command, server_env, start_server, stop_server

KEYS = {"alice": "a" * 8 + "0123456789abcdef", "bob": "b" * 8 + "0123456789abcdef", "carol": "c" * 8 + "0123456789abcdef"}
ENV_KEY = "e" * 8 + "fedcba9876543210"


def call(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None, key: str | None = None):
    """(status, headers, JSON or text)."""
    headers = dict(headers or {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    got = {k.lower(): v for k, v in response.getheaders()}
    if got.get("content-type", "").startswith("application/json"):
        return response.status, got, json.loads(data)
    return response.status, got, data.decode(errors="replace")


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def guarded(tiny_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("guarded")
    key_file = folder / "keys.txt"
    key_file.write_text("# the team's keys\n" + "".join(f"{name}:{key}\n" for name, key in KEYS.items()))
    server = start_server(
        tiny_bundle,
        folder / "serve.log",
        "--api-key-file",
        key_file,
        "--rate-limit",
        "6/minute",
        "--explain-rate-limit",
        "2/minute",
        "--max-faces",
        1,
        "--max-explain-pixels",
        400_000,
        "--cors-origin",
        "https://app.example",
        env={"FERLAB_API_KEYS": ENV_KEY},
    )
    yield server
    stop_server(server)


def test_keys_guard_every_endpoint_but_health_and_the_page(guarded):
    photo = jpeg(astronaut_scene())
    for path in ("/healthz", "/readyz", "/", "/static/app.js", "/docs", "/openapi.json"):
        assert call(guarded, "GET", path)[0] == 200, path
    guarded_routes = [("POST", "/v1/predict", photo), ("POST", "/v1/explain", photo), ("GET", "/v1/model", None), ("GET", "/metrics", None)]
    for method, path, body in guarded_routes:
        status, headers, answer = call(guarded, method, path, body, JPEG)
        assert status == 401, (path, answer)
        assert headers["www-authenticate"].startswith("Bearer") and "no API key" in answer["detail"]
        status, _, answer = call(guarded, method, path, body, JPEG, key="not-" + KEYS["alice"])
        assert status == 401 and "a wrong API key" in answer["detail"], path
    status, headers, answer = call(guarded, "POST", "/v1/predict", photo, JPEG | {"X-Request-ID": "trace-42"}, key=KEYS["alice"])
    assert status == 200 and len(answer["faces"]) == 1
    assert headers["x-request-id"] == "trace-42" and "x-model-version" not in headers  # a bundle folder has no version
    # a key from $FERLAB_API_KEYS works beside the file's (one can be rotated in before the other goes)
    status, headers, _ = call(guarded, "GET", "/v1/model", key=ENV_KEY)
    assert status == 200 and len(headers["x-request-id"]) == 32  # none given: one is made
    status, _, _ = call(guarded, "GET", "/v1/model", headers={"Authorization": f"bearer {KEYS['alice']}"})
    assert status == 200  # the scheme's case does not matter
    log = guarded.log.read_text()
    assert all(key not in log for key in [*KEYS.values(), ENV_KEY])  # keys are never written down
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    (traced,) = [line for line in lines if line["request_id"] == "trace-42"]
    assert traced["key"] == "alice" and traced["status"] == 200 and traced["path"] == "/v1/predict" and traced["faces"] == 1
    assert any(line["status"] == 401 and line["key"] is None for line in lines)


def test_security_headers_and_cors_only_for_the_origins_allowed(guarded):
    status, headers, _ = call(guarded, "GET", "/v1/model", headers={"Origin": "https://evil.example"}, key=KEYS["alice"])
    assert status == 200
    assert "access-control-allow-origin" not in headers
    status, headers, _ = call(guarded, "GET", "/v1/model", headers={"Origin": "https://app.example"}, key=KEYS["alice"])
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    preflight["Access-Control-Request-Headers"] = "authorization"
    status, headers, _ = call(guarded, "OPTIONS", "/v1/predict", headers=preflight)
    assert status == 200 and "authorization" in headers["access-control-allow-headers"].lower()
    status, headers, _ = call(guarded, "GET", "/v1/model", headers={"Origin": "https://app.example"})
    assert status == 401 and headers["access-control-allow-origin"] == "https://app.example"  # the page can read why
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert headers["content-security-policy"].startswith("default-src 'none'") and headers["cache-control"] == "no-store"
    status, headers, _ = call(guarded, "GET", "/")
    assert "camera=(self)" in headers["permissions-policy"] and "media-src 'self'" in headers["content-security-policy"]


def test_each_client_has_its_own_rate_limit_and_explain_a_lower_one(guarded):
    photo = jpeg(astronaut_scene())
    statuses = [call(guarded, "POST", "/v1/predict", photo, JPEG, key=KEYS["bob"])[0] for _ in range(6)]
    assert statuses == [200] * 6
    status, headers, answer = call(guarded, "POST", "/v1/predict", photo, JPEG, key=KEYS["bob"])
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60 and "too many requests" in answer["detail"]
    assert call(guarded, "POST", "/v1/predict", photo, JPEG, key=KEYS["carol"])[0] == 200  # another key: its own budget
    assert call(guarded, "GET", "/v1/model", key=KEYS["bob"])[0] == 200  # only the image endpoints count
    small = jpeg(cv2.resize(astronaut_scene(), (320, 240)))
    explained = [call(guarded, "POST", "/v1/explain?method=occlusion", small, JPEG, key=KEYS["carol"])[0] for _ in range(3)]
    assert explained == [200, 200, 429]


def test_caps_on_faces_and_on_explained_pixels(guarded):
    two = jpeg(np.hstack([astronaut_scene(), astronaut_scene()]))  # 1280x480, two faces; the server answers one
    status, _, answer = call(guarded, "POST", "/v1/predict", two, JPEG, key=ENV_KEY)
    assert status == 200 and len(answer["faces"]) == 1 and answer["faces_omitted"] == 1
    status, _, answer = call(guarded, "POST", "/v1/explain", two, JPEG, key=ENV_KEY)  # 614,400 pixels > 400,000
    assert status == 400 and "above the limit of 400,000" in answer["detail"]
    status, _, info = call(guarded, "GET", "/v1/model", key=ENV_KEY)
    assert info["limits"]["max_faces"] == 1 and info["limits"]["max_explain_pixels"] == 400_000


def test_metrics_count_requests_models_batches_and_emotions(guarded):
    call(guarded, "POST", "/v1/predict", jpeg(astronaut_scene()), JPEG, key=ENV_KEY)
    call(guarded, "GET", "/v1/model")  # no key: a 401
    status, headers, text = call(guarded, "GET", "/metrics", key=ENV_KEY)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['ferlab_requests_total{method="POST",route="/v1/predict",status="200"}'] >= 1
    assert samples['ferlab_requests_total{method="GET",route="/v1/model",status="401"}'] >= 1
    assert any(name.startswith("ferlab_model_info{") and value == 1 for name, value in samples.items())
    assert samples["ferlab_batch_faces_count"] >= 1 and samples["ferlab_faces_per_image_count"] >= 1
    assert sum(v for n, v in samples.items() if n.startswith("ferlab_predicted_emotions_total")) >= 1
    assert samples['ferlab_request_seconds_count{route="/v1/predict"}'] >= 1
    assert samples["ferlab_requests_admitted"] == 0  # none in flight now


def run_serve(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(serve_command(*args), capture_output=True, text=True, cwd=cwd, env=server_env(), timeout=120)


def test_a_network_address_needs_keys_or_says_why(tmp_path, tiny_bundle):
    result = run_serve(tmp_path, "--model", tiny_bundle, "--host", "0.0.0.0", "--port", free_port())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: serving on 0.0.0.0 without API keys would let anyone")
    (tmp_path / "short.txt").write_text("tooshort\n")
    result = run_serve(tmp_path, "--model", tiny_bundle, "--api-key-file", tmp_path / "short.txt", "--port", free_port())
    assert result.returncode == 1 and "shorter than 16 characters" in result.stderr
    result = run_serve(tmp_path, "--model", tiny_bundle, "--api-key-file", tmp_path / "none.txt", "--port", free_port())
    assert result.returncode == 1 and "cannot read the API key file" in result.stderr


def test_a_request_over_its_time_limit_is_a_503():
    import asyncio

    from fastapi import HTTPException

    from ferlab.serve.app import _time_limit

    async def slow():
        async with _time_limit(0.05):
            await asyncio.sleep(5)

    with pytest.raises(HTTPException) as refused:
        asyncio.run(slow())
    assert refused.value.status_code == 503 and "longer than the limit of 0.05 s" in refused.value.detail


# ---- live reloads ---------------------------------------------------------------------------------


def ferlab(cwd: Path, *args) -> str:
    result = subprocess.run(["ferlab", *args], capture_output=True, text=True, cwd=cwd, env=server_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_a_promote_and_a_rollback_reach_a_loaded_server_without_an_error(tmp_path):
    """Two versions in a registry, the server following @production every second, 16 clients sending
    frames all along: every answer 200, each from version 1 or 2, and the switch in /metrics."""
    ferlab(tmp_path, "models", "import", "pretrained:fast")
    ferlab(tmp_path, "models", "import", "pretrained:fast")
    ferlab(tmp_path, "models", "promote", "1")
    server = start_server("models:/ferlab-emotion@production", tmp_path / "serve.log", "--reload-interval", 1, "--rate-limit", "none")
    photo = jpeg(astronaut_scene())
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            status, headers, body = call(server, "POST", "/v1/predict", photo, JPEG)
            answers.append((status, body["model"]["version"] if status == 200 else str(body)))

    def serving() -> str:
        return call(server, "GET", "/v1/model")[2]["version"]

    def wait_for(version: str, started: float) -> float:
        while serving() != version:
            assert time.monotonic() - started < 60, f"version {version} never came:\n{server.log_tail()}"
            time.sleep(0.2)
        return time.monotonic() - started

    pool = ThreadPoolExecutor(16)
    try:
        assert serving() == "1"
        clients = [pool.submit(client) for _ in range(16)]
        time.sleep(2)
        promoting = time.monotonic()
        ferlab(tmp_path, "models", "promote", "2")
        to_new = wait_for("2", promoting)
        time.sleep(2)
        rolling_back = time.monotonic()
        ferlab(tmp_path, "models", "rollback")
        to_old = wait_for("1", rolling_back)
        time.sleep(1)
        stop.set()
        pool.shutdown(wait=True)
        for done in clients:
            done.result()  # a client that broke off says why
        metrics = call(server, "GET", "/metrics")[2]
        info = call(server, "GET", "/v1/model")[2]
    finally:
        stop.set()
        pool.shutdown(wait=True)
        stop_server(server)
    print(f"{len(answers)} answers; the promote served {to_new:.1f} s after the command started, the rollback {to_old:.1f} s")
    assert len(answers) > 50
    assert {status for status, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
    assert {version for _, version in answers} == {"1", "2"}
    assert 'ferlab_model_reloads_total{outcome="swapped"} 2.0' in metrics
    assert 'ferlab_answers_by_model_total{version="1"}' in metrics and 'ferlab_answers_by_model_total{version="2"}' in metrics
    assert info["reload"]["last"]["outcome"] == "swapped" and info["reload"]["last"]["previous"] == "2"
    assert server.log.read_text().count("now serving ferlab-emotion version") == 2


def test_a_reload_that_fails_keeps_the_old_model_serving(tmp_path, tiny_bundle):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    server = start_server(bundle, tmp_path / "serve.log", "--reload-interval", 0)
    photo = jpeg(astronaut_scene())
    try:
        before = call(server, "POST", "/v1/predict", photo, JPEG)[2]["faces"]
        status, _, same = call(server, "POST", "/v1/admin/reload?force=false")
        assert status == 200 and same["outcome"] == "unchanged"
        (bundle / "model.tflite").write_bytes(b"not a model")
        status, _, failed = call(server, "POST", "/v1/admin/reload")
        assert status == 503 and failed["outcome"] == "failed" and failed["error"]
        status, _, after = call(server, "POST", "/v1/predict", photo, JPEG)
        assert status == 200 and after["faces"] == before  # the old model goes on answering
        info = call(server, "GET", "/v1/model")[2]
        assert info["reload"]["last"]["error"] == failed["error"]
        shutil.copy(tiny_bundle / "model.tflite", bundle / "model.tflite")
        status, _, swapped = call(server, "POST", "/v1/admin/reload")
        assert status == 200 and swapped["outcome"] == "swapped"
    finally:
        stop_server(server)
    assert "reload failed, still serving" in server.log.read_text()


def test_the_face_log_keeps_a_summary_of_each_face_answered_never_the_face(tmp_path, tiny_bundle):
    log = tmp_path / "faces.jsonl"
    server = start_server(tiny_bundle, tmp_path / "serve.log", "--face-log", log)
    try:
        for _ in range(3):
            status, _, answer = call(server, "POST", "/v1/predict", jpeg(astronaut_scene()), JPEG)
            assert status == 200 and len(answer["faces"]) == 1
        call(server, "POST", "/v1/predict", jpeg(np.full((240, 320, 3), 120, np.uint8)), JPEG)  # no face: nothing logged
    finally:
        stop_server(server)  # a graceful stop writes what is queued
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 3
    top = max(answer["faces"][0]["probabilities"].values())
    assert all(abs(line["top_probability"] - top) < 1e-3 for line in lines)
    assert max(len(str(value)) for line in lines for value in line.values()) < 2000  # numbers, not pixels
