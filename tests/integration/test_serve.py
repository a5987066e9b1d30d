"""`ferlab serve` over real HTTP: a real server process, a tiny real model, real images (good and bad)."""

import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferlab.contract import EMOTIONS
from ferlab.inference.detect import DEFAULT_DETECTOR
from ferlab.inference.images import DEFAULT_MAX_PIXELS
from ferlab.inference.predict import EmotionRecognizer
from integration.conftest import free_port
from integration.serving import (
    ASTRONAUT_FACE,
    astronaut_scene,
    multipart,
    overlap,
    post_image,
    request,
    serve_command,
    server_env,
    start_server,
    stop_server,
)

UPLOAD_MB = 1  # a small --max-upload-mb, so the limit is cheap to cross


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = start_server(tiny_model_path, log, "--max-upload-mb", UPLOAD_MB, "--max-concurrency", 2)
    yield server
    stop_server(server)
    # SIGTERM: a graceful shutdown, and its messages still reach stderr after the detectors were made
    assert "Application shutdown complete" in server.log_tail()


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    return cv2.imencode(".jpg", astronaut_scene(), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def check_face(face: dict) -> None:
    assert list(face) == ["box", "confidence", "emotion", "probabilities"]
    assert list(face["probabilities"]) == list(EMOTIONS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["emotion"] == max(face["probabilities"], key=face["probabilities"].get)
    assert face["confidence"] is None or 0 < face["confidence"] <= 1  # haar gives none, blazeface a score


# ---- good images ------------------------------------------------------------------------------


def test_a_face_comes_back_as_the_cli_and_library_describe_it(server, astronaut_jpeg, tiny_model_path):
    status, answer = post_image(server, astronaut_jpeg)
    assert status == 200, answer
    assert (answer["width"], answer["height"]) == (640, 480)
    assert len(answer["faces"]) == 1
    face = answer["faces"][0]
    check_face(face)
    box = face["box"]
    assert overlap((box["x"], box["y"], box["w"], box["h"]), ASTRONAUT_FACE) > 0.7
    assert set(answer["timing_ms"]) == {"read", "detect", "classify", "total"}
    assert answer["model"] == {"name": tiny_model_path.name, "version": None}
    # the same model in this process gives the same face: Face.to_dict() is the schema
    expected = EmotionRecognizer.load(tiny_model_path).predict(astronaut_jpeg)[0].to_dict()
    assert face["box"] == expected["box"] and face["emotion"] == expected["emotion"]
    assert face["confidence"] == (None if expected["confidence"] is None else pytest.approx(expected["confidence"], abs=1e-4))
    assert face["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)


def test_multipart_upload_and_raw_bodies_of_each_format_agree(server, astronaut_jpeg):
    reference = post_image(server, astronaut_jpeg)[1]["faces"]
    body, headers = multipart(astronaut_jpeg, "astronaut.jpg", content_type="image/jpeg")
    status, answer = request(server, "POST", "/v1/predict", body, headers)
    assert status == 200, answer
    assert answer["faces"] == reference
    assert post_image(server, astronaut_jpeg, "application/octet-stream")[1]["faces"] == reference
    scene = astronaut_scene()
    for ext, content_type in [(".png", "image/png"), (".webp", "image/webp"), (".bmp", "image/bmp")]:
        data = cv2.imencode(ext, scene, [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else [])[1].tobytes()
        status, answer = post_image(server, data, content_type)
        assert status == 200, (content_type, answer)
        assert len(answer["faces"]) == 1, content_type
        check_face(answer["faces"][0])


def test_a_real_fer_face_and_an_image_without_a_face(server, fer_faces):
    from conftest import face_scene

    found = 0
    for face in fer_faces[0][:6]:
        status, answer = post_image(server, cv2.imencode(".png", face_scene(face))[1].tobytes(), "image/png")
        assert status == 200, answer
        for f in answer["faces"]:
            check_face(f)
        found += len(answer["faces"]) == 1
    assert found >= 3  # the detector finds most enlarged FER faces
    wall = cv2.imencode(".jpg", np.full((480, 640, 3), 120, np.uint8))[1].tobytes()
    status, answer = post_image(server, wall)
    assert status == 200
    assert answer["faces"] == [] and (answer["width"], answer["height"]) == (640, 480)


# ---- bad input: a clear 4xx, never a 500 ----------------------------------------------------------


def bad_inputs(jpeg: bytes):
    """(what, body, headers, status, words the message must contain)."""
    jpeg_type = {"Content-Type": "image/jpeg"}
    rng = np.random.default_rng(0)
    corrupt = jpeg[:2] + rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    huge = cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))[1].tobytes()  # 64 M pixels in ~60 KB
    assert len(huge) < UPLOAD_MB << 20
    too_big = np.random.default_rng(1).integers(0, 256, (UPLOAD_MB << 20) + 1000, dtype=np.uint8).tobytes()
    text_form = multipart(b"this is not an image\n", "notes.jpg", content_type="image/jpeg")
    no_file = multipart(jpeg, "a.jpg", field="image")
    return [
        ("corrupt JPEG", corrupt, jpeg_type, 400, "not a readable image"),
        ("truncated JPEG", jpeg[: len(jpeg) // 3], jpeg_type, 400, "not a readable image"),
        ("text file named .jpg", *text_form, 400, "not a readable image"),
        ("zero bytes", b"", jpeg_type, 400, "empty"),
        ("text/plain", b"hello", {"Content-Type": "text/plain"}, 415, "Content-Type"),
        ("no Content-Type", jpeg, {}, 415, "Content-Type"),
        ("form without `file`", *no_file, 400, "`file`"),
        ("64 M pixels", huge, {"Content-Type": "image/png"}, 400, f"above the limit of {DEFAULT_MAX_PIXELS:,}"),
        ("body over --max-upload-mb", too_big, jpeg_type, 413, "larger than the limit"),
        ("form over --max-upload-mb", *multipart(too_big), 413, "larger than the limit"),
        (
            "chunked body over the limit",
            [too_big[i : i + 65536] for i in range(0, len(too_big), 65536)],
            jpeg_type,
            413,
            "larger than the limit",
        ),
    ]


def test_bad_inputs_get_the_right_status_and_one_clear_message(server, astronaut_jpeg):
    for what, body, headers, expected, words in bad_inputs(astronaut_jpeg):
        status, answer = request(server, "POST", "/v1/predict", body, headers)
        assert status == expected, (what, status, answer)
        assert isinstance(answer, dict) and words in answer["detail"], (what, answer)
        assert "Traceback" not in answer["detail"] and "\n" not in answer["detail"], what
    assert request(server, "GET", "/v1/predict")[0] == 405
    assert request(server, "GET", "/healthz")[0] == 200  # still alive
    assert "Traceback" not in server.log_tail()


def test_a_huge_upload_is_cut_off_not_held_in_memory(server):
    """64 MB sent without a Content-Length: the server stops reading at the limit."""

    def peak_rss_kb() -> int:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])

    if not Path(f"/proc/{server.proc.pid}/status").exists():
        pytest.skip("needs Linux /proc to read the server's memory")
    before = peak_rss_kb()
    chunk = bytes(1 << 20)
    sent = []

    def body():
        for _ in range(64):
            sent.append(len(chunk))
            yield chunk

    try:
        status, answer = request(server, "POST", "/v1/predict", body(), {"Content-Type": "image/jpeg"})
        assert status == 413, answer
    except (ConnectionError, socket.timeout):
        pass  # the server answered 413 and closed while we were still sending: also a refusal
    assert peak_rss_kb() - before < 40_000  # far below the 64 MB sent
    assert request(server, "GET", "/healthz")[0] == 200


# ---- /v1/explain ------------------------------------------------------------------------------------


def heat_map_picture(face: dict) -> np.ndarray:
    import base64

    picture = cv2.imdecode(np.frombuffer(base64.b64decode(face["heatmap_png"], validate=True), np.uint8), cv2.IMREAD_UNCHANGED)
    assert picture is not None, "heatmap_png is not a PNG"
    return picture


def test_explain_gives_the_faces_of_predict_with_a_heat_map_png_each(server, astronaut_jpeg):
    (predicted,) = post_image(server, astronaut_jpeg)[1]["faces"]
    for query, method in [("", "gradcam"), ("?method=auto", "gradcam"), ("?method=occlusion", "occlusion")]:
        status, answer = request(server, "POST", f"/v1/explain{query}", astronaut_jpeg, {"Content-Type": "image/jpeg"})
        assert status == 200, answer
        assert (answer["width"], answer["height"]) == (640, 480) and set(answer["timing_ms"]) == {"read", "detect", "explain", "total"}
        (face,) = answer["faces"]
        assert list(face) == ["box", "confidence", "emotion", "probabilities", "method", "heatmap_png"]
        assert face["method"] == method  # a .h5 is served on Keras: auto is Grad-CAM
        assert face["box"] == predicted["box"] and face["emotion"] == predicted["emotion"]
        assert face["probabilities"] == pytest.approx(predicted["probabilities"], abs=1e-4)  # the same answer, explained
        picture = heat_map_picture(face)
        assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[0] == picture.shape[1] >= 192
    body, headers = multipart(astronaut_jpeg, "astronaut.jpg", content_type="image/jpeg")
    status, answer = request(server, "POST", "/v1/explain?method=occlusion", body, headers)
    assert status == 200 and answer["faces"][0]["heatmap_png"] == face["heatmap_png"]
    wall = cv2.imencode(".png", np.full((240, 320, 3), 120, np.uint8))[1].tobytes()
    status, answer = post_image(server, wall, "image/png")
    assert status == 200 and answer["faces"] == []
    status, answer = request(server, "POST", "/v1/explain", wall, {"Content-Type": "image/png"})
    assert status == 200 and answer["faces"] == [] and (answer["width"], answer["height"]) == (320, 240)


def test_explain_refuses_what_predict_refuses(server, astronaut_jpeg):
    for what, body, headers, expected, words in bad_inputs(astronaut_jpeg):
        if what == "64 M pixels":  # explain's own, lower limit
            words = "above the limit of 4,000,000; resize it, or raise the limit (--max-explain-pixels)"
        status, answer = request(server, "POST", "/v1/explain", body, headers)
        assert status == expected, (what, status, answer)
        assert isinstance(answer, dict) and words in answer["detail"], (what, answer)
        assert "Traceback" not in answer["detail"] and "\n" not in answer["detail"], what
    status, answer = request(server, "POST", "/v1/explain?method=lime", astronaut_jpeg, {"Content-Type": "image/jpeg"})
    assert status == 400 and answer["detail"] == "unknown explanation method 'lime'; choose one of auto, occlusion, gradcam."
    assert request(server, "GET", "/v1/explain")[0] == 405
    assert request(server, "GET", "/healthz")[0] == 200
    assert "Traceback" not in server.log_tail()


def test_explain_on_litert_uses_occlusion(tiny_bundle, tmp_path, astronaut_jpeg):
    server = start_server(tiny_bundle, tmp_path / "serve.log")
    try:
        status, info = request(server, "GET", "/v1/model")
        auto = request(server, "POST", "/v1/explain", astronaut_jpeg, {"Content-Type": "image/jpeg"})
        gradcam = request(server, "POST", "/v1/explain?method=gradcam", astronaut_jpeg, {"Content-Type": "image/jpeg"})
        predicted = post_image(server, astronaut_jpeg)
    finally:
        stop_server(server)
    assert info["runtime"] == "tflite"
    status, answer = auto
    assert status == 200, answer
    (face,) = answer["faces"]
    assert face["method"] == "occlusion" and heat_map_picture(face).shape[2] == 3
    assert face["probabilities"] == pytest.approx(predicted[1]["faces"][0]["probabilities"], abs=1e-4)
    assert gradcam[0] == 400 and "Grad-CAM needs the gradients of a Keras model" in gradcam[1]["detail"]


def test_a_model_of_fewer_emotions_is_served_with_its_own(subset_bundle, tmp_path, astronaut_jpeg):
    subset = ["happy", "sad", "neutral"]
    server = start_server(subset_bundle, tmp_path / "serve.log")
    try:
        info = request(server, "GET", "/v1/model")[1]
        predicted = post_image(server, astronaut_jpeg)
        explained = request(server, "POST", "/v1/explain", astronaut_jpeg, {"Content-Type": "image/jpeg"})
        metrics = request(server, "GET", "/metrics")[1]
    finally:
        stop_server(server)
    assert info["emotions"] == subset
    status, answer = predicted
    assert status == 200, answer
    (face,) = answer["faces"]
    assert list(face["probabilities"]) == subset and sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    (expected,) = EmotionRecognizer.load(subset_bundle).predict(astronaut_jpeg)
    assert face["emotion"] == expected.emotion and face["probabilities"] == pytest.approx(expected.probabilities, abs=1e-4)
    assert explained[0] == 200 and list(explained[1]["faces"][0]["probabilities"]) == subset
    series = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("ferlab_predicted_emotions_total{"))
    assert series == {f'ferlab_predicted_emotions_total{{emotion="{e}"}}': ("1.0" if e == face["emotion"] else "0.0") for e in subset}
    assert "Traceback" not in server.log_tail()


# ---- the other endpoints --------------------------------------------------------------------------


def test_health_readiness_docs_and_model(server, tiny_model_path):
    assert server.readyz_while_loading == 503  # the port answered before the model was loaded
    assert server.predict_while_loading == 503
    assert request(server, "GET", "/healthz") == (200, {"status": "ok"})
    assert request(server, "GET", "/readyz") == (200, {"status": "ready"})
    status, docs = request(server, "GET", "/docs")
    assert status == 200 and "swagger" in docs.lower()
    assert "cdn" not in docs.lower() and "http" not in docs.replace("/openapi.json", "")  # works offline
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        status, text = request(server, "GET", asset)
        assert status == 200 and len(text) > 10_000 and asset in docs
    status, spec = request(server, "GET", "/openapi.json")
    for path in ("/v1/predict", "/v1/explain"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]
        assert "multipart/form-data" in body and "image/jpeg" in body
    (method,) = spec["paths"]["/v1/explain"]["post"]["parameters"]
    assert method["name"] == "method" and method["in"] == "query" and "occlusion" in method["description"]
    status, info = request(server, "GET", "/v1/model")
    assert status == 200
    assert info["source"] == str(tiny_model_path) and info["name"] == "model.h5"
    assert info["version"] is None and info["alias"] is None
    assert info["detector"] == DEFAULT_DETECTOR and info["runtime"] == "keras"  # a .h5: TensorFlow
    assert info["tta"] == "flip"  # each face classified with its mirror image, as the CLI does
    assert info["filling_faces"] is True  # a second look for a face filling an image where none was found
    assert info["emotions"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # the page takes them from here
    assert info["test_metrics"] is None  # a bare .h5 outside the project: no metrics to report
    assert info["limits"]["max_upload_bytes"] == UPLOAD_MB << 20
    assert info["limits"]["max_pixels"] == DEFAULT_MAX_PIXELS
    assert info["limits"]["max_concurrency"] == 2


def test_the_page_is_served_with_its_scripts(server):
    status, page = request(server, "GET", "/")
    assert status == 200 and 'id="overlay"' in page and "/static/app.js" in page
    status, script = request(server, "GET", "/static/app.js")
    assert status == 200 and "getUserMedia" in script and "/v1/predict" in script
    assert request(server, "GET", "/static/../serve.py")[0] == 404  # no path escapes static/


def test_sixteen_concurrent_requests_all_succeed(server, astronaut_jpeg):
    reference = post_image(server, astronaut_jpeg)[1]["faces"][0]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: post_image(server, astronaut_jpeg), range(32)))
    assert [status for status, _ in answers] == [200] * 32
    for _, answer in answers:
        assert len(answer["faces"]) == 1
        face = answer["faces"][0]
        assert face["box"] == reference["box"] and face["emotion"] == reference["emotion"]
        assert face["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-4)


def test_a_bundle_reports_its_metrics_and_a_full_server_says_busy(tiny_model_path, tmp_path, astronaut_jpeg):
    """A bundle folder: /v1/model names the model from its card and gives its test metrics.
    With room for one request and no queue, requests that arrive together are told to retry (503)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.h5").write_bytes(tiny_model_path.read_bytes())
    (bundle / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5, "macro_f1": 0.25, "weighted_f1": 0.4}}))
    (bundle / "MODEL_CARD.md").write_text("# Model card: tiny-emotion\n\nA test model.\n")
    server = start_server(bundle, tmp_path / "serve.log", "--max-concurrency", 1, "--max-queue", 0)
    big = cv2.imencode(".jpg", cv2.resize(astronaut_scene(), (1920, 1440)))[1].tobytes()  # slower to decode
    try:
        status, info = request(server, "GET", "/v1/model")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post_image(server, big), range(8)))
        assert post_image(server, astronaut_jpeg)[0] == 200  # the slot is free again
    finally:
        stop_server(server)
    assert status == 200
    assert info["name"] == "tiny-emotion" and info["source"] == str(bundle)
    assert info["test_metrics"] == {"accuracy": 0.5, "macro_f1": 0.25}
    statuses = sorted(status for status, _ in answers)
    assert 200 in statuses and 503 in statuses and set(statuses) == {200, 503}, statuses
    assert all("busy" in answer["detail"] for status, answer in answers if status == 503)


def test_with_no_model_named_it_serves_the_shipped_model_and_says_so(tmp_path, astronaut_jpeg):
    """An empty folder, no registry, no $FERLAB_MODEL: the rule's last step, the package's own model."""
    from ferlab.lifecycle import pretrained

    server = start_server(None, tmp_path / "serve.log")
    try:
        status, info = request(server, "GET", "/v1/model")
        answer = post_image(server, astronaut_jpeg)
    finally:
        stop_server(server)
    card = pretrained.card(pretrained.default_uri().removeprefix(pretrained.PREFIX))
    assert status == 200 and info["source"] == pretrained.default_uri() and info["version"] == card["version"]
    assert info["test_metrics"]["accuracy"] == card["privatetest"]["none"]["accuracy"]
    assert answer[0] == 200 and len(answer[1]["faces"]) == 1
    assert answer[1]["model"] == {"name": card["name"], "version": card["version"]}


# ---- the command's own errors: one line, exit status 1 -----------------------------------------


def run_serve(cwd: Path, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(serve_command(*args), capture_output=True, text=True, cwd=cwd, env=server_env(), timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, starts: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {starts}"), result.stderr
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1


def test_a_missing_model_is_one_clear_line(tmp_path, tiny_model_path):
    result = run_serve(tmp_path, "--model", tmp_path / "models" / "model.h5", "--port", free_port(), timeout=60)
    assert_one_line_error(result, "no model at ")
    assert "`dvc repro` trains one" in result.stderr
    # a registered model, but no registry: found out while loading, after the server started
    result = run_serve(tmp_path, "--model", "models:/ferlab-emotion@production", "--port", free_port())
    assert_one_line_error(result, "cannot resolve models:/ferlab-emotion@production")
    # a port in use
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(tmp_path, "--model", tiny_model_path, "--port", port, timeout=60)
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}")


def test_serve_help_lists_its_options():
    result = subprocess.run([sys.executable, "-m", "ferlab.cli", "serve", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--model", "--host", "--port", "--detector", "--max-pixels", "--max-upload-mb", "--max-concurrency"):
        assert option in result.stdout
