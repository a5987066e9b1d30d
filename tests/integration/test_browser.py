"""The page at / in a real headless Chromium: a fake webcam showing a real face, and the file picker.

Needs Debian's Chromium (`apt-get install -y --no-install-recommends chromium`, or FERLAB_CHROMIUM=<binary>)
and the `playwright` package (in the dev extra); Playwright's own browser download is never used.
Screenshots go to $FERLAB_TEST_ARTIFACTS (or the test's tmp folder); their paths are printed.
"""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferlab.contract import EMOTIONS
from integration.serving import ASTRONAUT_FACE, astronaut_scene, overlap, start_server, stop_server

CHROMIUM = os.environ.get("FERLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
INSTALL = (
    "`apt-get install -y --no-install-recommends chromium` (Debian/Ubuntu; or set FERLAB_CHROMIUM to a "
    'Chromium binary) and `pip install -e ".[dev]"` (playwright)'
)
if not CHROMIUM:
    pytest.skip(f"needs Chromium: {INSTALL}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason=f"needs the playwright package: {INSTALL}")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
WAIT_MS = 20_000


def write_y4m(path: Path, frame_bgr: np.ndarray, frames: int = 5) -> Path:
    """A raw 4:2:0 video that Chromium's fake camera plays in a loop."""
    height, width = frame_bgr.shape[:2]
    planes = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YUV_I420).tobytes()  # Y, then U, then V
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + planes)
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FERLAB_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    server = start_server(tiny_model_path, tmp_path_factory.mktemp("browser") / "serve.log")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:
        yield p


def launch(playwright, *extra):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + list(extra))


def screenshot(page, artifacts: Path, name: str) -> None:
    path = artifacts / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def last_result(page) -> dict:
    return json.loads(page.locator("#last-result").text_content())


def overlay_pixels(page, box: dict) -> dict:
    """The overlay canvas' alpha on the box's left edge, at its centre and in a far corner, and its geometry."""
    return page.evaluate(
        """(box) => {
        const canvas = document.getElementById("overlay");
        const ctx = canvas.getContext("2d");
        const alpha = (x, y) => ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data[3];
        const media = document.querySelector("#stage > :not([hidden]):not(canvas)").getBoundingClientRect();
        const over = canvas.getBoundingClientRect();
        return {
            edge: alpha(box.x, box.y + box.h / 2),
            centre: alpha(box.x + box.w / 2, box.y + box.h / 2),
            corner: alpha(canvas.width - 3, canvas.height - 3),
            width: canvas.width, height: canvas.height,
            covers: Math.abs(media.left - over.left) < 1 && Math.abs(media.top - over.top) < 1 &&
                    Math.abs(media.width - over.width) < 1 && Math.abs(media.height - over.height) < 1,
        };
    }""",
        box,
    )


def check_drawn_face(page, size: tuple[int, int]) -> dict:
    """One face, at the astronaut's face, drawn on the overlay and listed with its emotion and bars."""
    result = last_result(page)
    assert len(result["faces"]) == 1, result
    face = result["faces"][0]
    box = face["box"]
    assert overlap((box["x"], box["y"], box["w"], box["h"]), ASTRONAUT_FACE) > 0.7, box
    drawn = overlay_pixels(page, box)
    assert (drawn["width"], drawn["height"]) == size
    assert drawn["edge"] > 0, "no box drawn where the face is"
    assert drawn["centre"] == 0 and drawn["corner"] == 0, "the overlay is painted where no box is"
    assert drawn["covers"], "the overlay does not lie over the picture"
    label = page.locator("#faces-list li").first
    assert label.get_attribute("data-emotion") == face["emotion"] in EMOTIONS
    assert label.inner_text().startswith(face["emotion"])
    bars = page.locator("#bars .bar")
    assert bars.count() == 7
    assert [bars.nth(i).get_attribute("data-emotion") for i in range(7)] == list(EMOTIONS)
    assert sum(float(bars.nth(i).get_attribute("data-probability")) for i in range(7)) == pytest.approx(1, abs=1e-3)
    return face


def check_explained(page, face: dict) -> None:
    """Explain was pressed: the largest face comes back with its heat map, shown as a decoded PNG."""
    page.wait_for_selector("#explain[data-state='shown']", timeout=WAIT_MS)
    picture = page.evaluate("""() => {
        const img = document.getElementById("explain-image");
        return {src: img.src.slice(0, 22), width: img.naturalWidth, height: img.naturalHeight, shown: !img.hidden,
                box: img.getBoundingClientRect().width};
    }""")
    assert picture == {"src": "data:image/png;base64,", "width": picture["width"], "height": picture["width"], "shown": True, "box": 192}, (
        picture
    )
    assert picture["width"] >= 192  # the face region, decoded
    caption = page.locator("#explain-caption").inner_text()
    assert caption.startswith(f"{face['emotion']} ") and "Grad-CAM" in caption  # a .h5 runs on Keras: auto is Grad-CAM


def test_webcam_frames_get_boxes_labels_and_bars(server, playwright, tmp_path, artifacts):
    video = write_y4m(tmp_path / "astronaut.y4m", astronaut_scene())
    browser = launch(playwright, *FAKE_CAMERA_ARGS, f"--use-file-for-fake-video-capture={video}")
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server.url)
        page.wait_for_selector("#stage[data-source='camera'][data-faces='1']", timeout=WAIT_MS)
        assert page.evaluate("() => document.getElementById('video').videoWidth") == 640
        check_drawn_face(page, (640, 480))
        assert page.locator("#status").inner_text() == "1 face found."
        page.wait_for_function("() => /^\\d+ ms$/.test(document.getElementById('rtt').textContent)")
        # frames keep flowing, one request at a time: the result is refreshed
        first = page.locator("#last-result").text_content()
        page.wait_for_function(
            "(first) => document.getElementById('last-result').textContent !== first", arg=first, timeout=WAIT_MS
        )  # timing_ms differs from frame to frame
        assert page.locator("#explain").get_attribute("data-state") == ""
        page.click("#explain-button")  # the current frame, while the frames keep flowing
        check_explained(page, last_result(page)["faces"][0])
        screenshot(page, artifacts, "webcam_page.png")
    finally:
        browser.close()


def test_without_a_camera_the_page_says_so_and_a_chosen_image_works(server, playwright, tmp_path, artifacts):
    still = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(still), astronaut_scene())
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((300, 400, 3), 120, np.uint8))
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image\n")
    browser = launch(playwright)  # no fake camera: the camera is refused or absent
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server.url)
        page.wait_for_selector("#status.error", timeout=WAIT_MS)
        assert "camera" in page.locator("#status").inner_text().lower()
        assert page.locator("#explain-button").is_disabled()  # nothing to explain yet

        page.set_input_files("#file", str(still))
        page.wait_for_selector("#stage[data-source='file'][data-faces='1']", timeout=WAIT_MS)
        assert page.locator("#still").is_visible() and not page.locator("#video").is_visible()
        face = check_drawn_face(page, (640, 480))
        page.click("#explain-button")
        check_explained(page, face)
        screenshot(page, artifacts, "still_image_page.png")

        page.set_input_files("#file", str(wall))
        page.wait_for_selector("#stage[data-faces='0']", timeout=WAIT_MS)
        assert page.locator("#status").inner_text().startswith("No face found")
        assert page.locator("#faces-list li").count() == 0
        assert page.locator("#explain-image").is_hidden()  # the last face's heat map went with its image
        page.click("#explain-button")
        page.wait_for_selector("#explain[data-state='none']", timeout=WAIT_MS)
        assert page.locator("#explain-caption").inner_text() == "No face to explain in this image."

        page.set_input_files("#file", str(notes))
        page.wait_for_selector("#status.error", timeout=WAIT_MS)
        assert "HTTP 400" in page.locator("#status").inner_text()
        assert "not a readable image" in page.locator("#status").inner_text()
    finally:
        browser.close()


def test_a_server_with_keys_gets_the_key_once_and_then_works(tiny_model_path, playwright, tmp_path):
    key = "page-key-0123456789abcdef"
    (tmp_path / "keys.txt").write_text(f"page:{key}\n")
    guarded = start_server(tiny_model_path, tmp_path / "serve.log", "--api-key-file", tmp_path / "keys.txt")
    video = write_y4m(tmp_path / "astronaut.y4m", astronaut_scene())
    browser = launch(playwright, *FAKE_CAMERA_ARGS, f"--use-file-for-fake-video-capture={video}")
    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept(key)

    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("dialog", answer)
        page.goto(guarded.url)
        page.wait_for_selector("#stage[data-source='camera'][data-faces='1']", timeout=WAIT_MS)
        check_drawn_face(page, (640, 480))
        page.wait_for_function("() => document.getElementById('model').textContent.startsWith('Model:')", timeout=WAIT_MS)
    finally:
        browser.close()
        stop_server(guarded)
    assert asked == ["This server needs an API key:"]
    assert key not in guarded.log.read_text()
