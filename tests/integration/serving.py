"""A real `ferlab serve` process on a free loopback port, and plain HTTP calls to it (for the serve and browser tests)."""

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from integration.conftest import free_port, wait_http


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path
    readyz_while_loading: int | None = None  # what /readyz said the first time /healthz answered
    predict_while_loading: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def serve_command(*args) -> list[str]:
    return [sys.executable, "-m", "ferlab.cli", "serve", *map(str, args)]


def server_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FERLAB_MODEL"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def start_server(model: Path | str | None, log: Path, *args, cwd: Path | None = None, env: dict | None = None) -> Server:
    """Start `ferlab serve --model MODEL --port <free>` (no --model for None), with `env` added to the
    environment, and wait until /readyz answers 200."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            serve_command(*(("--model", model) if model is not None else ()), "--port", port, *args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env() | (env or {}),
            cwd=cwd or log.parent,
        )
    server = Server(proc, port, log)
    try:
        wait_http(f"{server.url}healthz", proc, seconds=120)
        server.readyz_while_loading = request(server, "GET", "/readyz")[0]
        server.predict_while_loading = request(server, "POST", "/v1/predict", b"x", {"Content-Type": "image/jpeg"})[0]
        deadline = time.monotonic() + 180
        while request(server, "GET", "/readyz")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not get ready:\n{server.log_tail()}")
            time.sleep(0.2)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)  # uvicorn's graceful shutdown
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)


def request(server: Server, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 60) -> tuple[int, dict | str]:
    """(status, JSON or text). `body` may be bytes or an iterable of chunks (sent chunked)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        chunked = body is not None and not isinstance(body, (bytes, bytearray))
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.getheader("content-type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, data.decode(errors="replace")


def multipart(
    data: bytes, filename: str = "image.jpg", field: str = "file", content_type: str = "application/octet-stream"
) -> tuple[bytes, dict]:
    """A multipart/form-data body with one file, and its headers."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_image(server: Server, data: bytes, content_type: str = "image/jpeg") -> tuple[int, dict | str]:
    return request(server, "POST", "/v1/predict", data, {"Content-Type": content_type})


def astronaut_scene():
    """A 640x480 BGR frame with scikit-image's astronaut: a real face, at about (242, 58, 98, 98) (Haar's box)."""
    import cv2
    from skimage import data

    face = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (480, 480), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(face, 0, 0, 80, 80, cv2.BORDER_CONSTANT, value=(40, 40, 40))


ASTRONAUT_FACE = (242, 58, 98, 98)  # x, y, w, h


def overlap(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)
