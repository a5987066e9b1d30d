"""Video files and live sources: frame loops, face tracking, drawing, and their outputs.

- `analyse_video`: every frame or every Nth of a file -> a per-face CSV, an annotated
  video, a timeline plot of the emotions and a summary with the dominant emotion.
- `run_live`: the webcam demo: a camera, stream URL or file, shown in an OpenCV window
  (`q` quits) or, without a window, written to a video file.
"""

import csv
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.fileio import atomic_path, write_json
from ferlab.inference.predict import EmotionRecognizer, Face

WINDOW = "ferlab"
CSV_FIELDS = ("frame", "time_s", "face", *Face.ROW_FIELDS)
DEFAULT_FPS = 30.0  # when a file does not say its frame rate
BOX_COLOR = (0, 200, 255)  # BGR


# ---- sources and writers --------------------------------------------------------------------


def open_source(source: str | int) -> cv2.VideoCapture:
    """A camera index, a stream URL or a video file, opened; FerlabError if it does not open."""
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    is_file = isinstance(source, str) and "://" not in source
    if is_file and not Path(source).is_file():
        raise FerlabError(f"{source}: no such video file; check the path.")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        what = f"camera {source}" if isinstance(source, int) else source
        hint = (
            "check that it is connected and not in use"
            if isinstance(source, int)
            else "it is not a video OpenCV can read (corrupt, or an unsupported codec); convert it to MP4 (H.264)"
        )
        raise FerlabError(f"cannot open {what}: {hint}.")
    return capture


def frame_rate(capture: cv2.VideoCapture) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if fps and math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS


def open_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """A video writer: MJPG for .avi, MPEG-4 for anything else."""
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if str(path).lower().endswith(".avi") else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise FerlabError(f"cannot write the video {path}; use a .mp4 or .avi name in a writable folder.")
    return writer


# ---- tracking -------------------------------------------------------------------------------


class Tracker:
    """Stable face indices across frames, by nearest box.

    A face takes the index of the nearest face of recent frames when their centres are
    closer than `reach` times that face's size; otherwise it gets a new index. A face
    not seen for `patience` frames is forgotten.
    """

    def __init__(self, reach: float = 0.6, patience: int = 10):
        self.reach, self.patience = reach, patience
        self.tracks: dict[int, tuple[tuple[int, int, int, int], int]] = {}  # index -> (box, frames unseen)
        self.next_index = 0

    def update(self, boxes: list[tuple[int, int, int, int]]) -> list[int]:
        def centre(b):
            return b[0] + b[2] / 2, b[1] + b[3] / 2

        pairs = []
        for i, box in enumerate(boxes):
            for index, (old, _) in self.tracks.items():
                distance = math.dist(centre(box), centre(old))
                if distance < self.reach * max(old[2], old[3]):
                    pairs.append((distance, i, index))
        indices: list[int | None] = [None] * len(boxes)
        taken = set()
        for _, i, index in sorted(pairs):
            if indices[i] is None and index not in taken:
                indices[i] = index
                taken.add(index)
        for i in range(len(boxes)):
            if indices[i] is None:
                indices[i] = self.next_index
                self.next_index += 1
        self.tracks = {
            index: (box, unseen + 1) for index, (box, unseen) in self.tracks.items() if index not in indices and unseen + 1 < self.patience
        }
        self.tracks.update({index: (box, 0) for index, box in zip(indices, boxes)})
        return indices


# ---- drawing --------------------------------------------------------------------------------


def _text(image, text, origin, scale=0.5, color=(255, 255, 255)):
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def draw_faces(image: np.ndarray, faces: list[Face], indices: list[int] | None = None, bars: bool = True) -> np.ndarray:
    """A copy of a BGR image with each face's box, label and (if bars) its probabilities (one per emotion of its model)."""
    out = image.copy()
    scale = max(0.4, min(1.2, out.shape[0] / 900))
    line = int(22 * scale) + 2
    for n, face in enumerate(faces):
        x, y, w, h = face.box
        cv2.rectangle(out, (x, y), (x + w, y + h), BOX_COLOR, max(1, int(2 * scale)))
        tag = f"#{indices[n]} " if indices is not None else ""
        _text(out, f"{tag}{face.emotion} {face.probabilities[face.emotion]:.0%}", (x, max(line, y - 6)), scale, BOX_COLOR)
        if not bars:
            continue
        label = max(cv2.getTextSize(e, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, 1)[0][0] for e in face.probabilities) + 6
        bar = int(80 * scale)
        left = x + w + 6 if x + w + 6 + label + bar < out.shape[1] else max(0, x - label - bar - 6)
        for k, emotion in enumerate(face.probabilities):
            top = y + k * line
            _text(out, emotion, (left, top + line - 6), scale * 0.8)
            start = left + label
            cv2.rectangle(out, (start, top + 4), (start + bar, top + line - 4), (255, 255, 255), 1)
            cv2.rectangle(out, (start, top + 4), (start + int(bar * face.probabilities[emotion]), top + line - 4), BOX_COLOR, -1)
    return out


def draw_fps(image: np.ndarray, fps: float) -> None:
    _text(image, f"{fps:.1f} FPS", (10, 25), 0.7, (0, 255, 0))


# ---- video files ----------------------------------------------------------------------------


def sampled_frames(capture: cv2.VideoCapture, stride: int):
    """(index, frame) for every frame of the capture; frame is None for those between the
    stride's (grabbed, not decoded)."""
    index = 0
    while True:
        if index % stride:
            ok, frame = capture.grab(), None
        else:
            ok, frame = capture.read()
        if not ok:
            return
        yield index, frame
        index += 1


class Timeline:
    """The emotions of a video over time: per analysed frame with faces, the mean over its faces."""

    def __init__(self, emotions: tuple[str, ...] = EMOTIONS):
        self.emotions = emotions
        self.times, self.frame_means, self.face_probabilities = [], [], []

    def add(self, t: float, faces: list[Face]) -> None:
        if faces:
            p = np.array([[face.probabilities[e] for e in self.emotions] for face in faces])
            self.times.append(t)
            self.frame_means.append(p.mean(axis=0))
            self.face_probabilities.extend(p)

    def mean(self) -> np.ndarray | None:
        return np.mean(self.face_probabilities, axis=0) if self.face_probabilities else None

    def plot(self, dominant: str | None, path: Path) -> None:
        from ferlab import plots

        plots.emotion_timeline(self.times, np.array(self.frame_means).reshape(-1, len(self.emotions)), dominant, path, self.emotions)


def analyse_video(
    recognizer: EmotionRecognizer, path: str | os.PathLike, out_dir: str | os.PathLike, stride: int = 1, progress: bool = True
) -> dict:
    """Write <stem>.csv, <stem>.annotated.mp4, <stem>.timeline.png and <stem>.summary.json to out_dir.

    Every `stride`-th frame is analysed; the annotated video holds those frames, at fps / stride.
    """
    from tqdm import tqdm

    if stride < 1:
        raise FerlabError(f"--stride must be 1 or more, not {stride}.")
    path, out_dir = Path(path), Path(out_dir)
    capture = open_source(str(path))
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = frame_rate(capture)
    outputs = {
        k: out_dir / f"{path.stem}{suffix}"
        for k, suffix in (("csv", ".csv"), ("video", ".annotated.mp4"), ("timeline", ".timeline.png"), ("summary", ".summary.json"))
    }
    emotions = recognizer.emotions
    tracker, timeline, writer = Tracker(), Timeline(emotions), None
    frames = analysed = 0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    bar = tqdm(total=total, unit="frame", desc=path.name, disable=not progress, file=sys.stderr)
    try:
        with atomic_path(outputs["csv"]) as csv_tmp, open(csv_tmp, "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(("frame", "time_s", "face", *Face.row_fields(emotions)))
            for frames, (index, frame) in enumerate(sampled_frames(capture, stride), start=1):
                bar.update(1)
                if frame is None:
                    continue
                faces = recognizer.predict(frame)
                face_ids = tracker.update([face.box for face in faces])
                rows.writerows([index, f"{index / fps:.3f}", face_id, *face.to_row()] for face_id, face in zip(face_ids, faces))
                timeline.add(index / fps, faces)
                writer = writer or open_writer(outputs["video"], fps / stride, (frame.shape[1], frame.shape[0]))
                writer.write(draw_faces(frame, faces, face_ids))
                analysed += 1
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise FerlabError(f"{path} has no readable frames; it may be corrupt: convert it to MP4 (H.264).")
    mean = timeline.mean()
    dominant = emotions[int(np.argmax(mean))] if mean is not None else None
    timeline.plot(dominant, outputs["timeline"])
    summary = {
        "video": str(path),
        "fps": fps,
        "frames": frames,
        "stride": stride,
        "analysed_frames": analysed,
        "frames_with_faces": len(timeline.times),
        "faces_tracked": tracker.next_index,
        "dominant_emotion": dominant,
        "mean_probabilities": None if mean is None else {e: float(v) for e, v in zip(emotions, mean)},
        "outputs": {k: str(v) for k, v in outputs.items()},
    }
    write_json(outputs["summary"], summary)
    return summary


# ---- live -----------------------------------------------------------------------------------


def check_window() -> None:
    """FerlabError unless this OpenCV can open a window on this machine."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise FerlabError("there is no display to show a window on; use --no-window (and --output FILE) to write the video instead.")
    try:
        cv2.namedWindow(WINDOW)
    except cv2.error:
        raise FerlabError(
            "this OpenCV cannot open windows (opencv-python-headless); use --no-window, or install opencv-python for the live window."
        ) from None


def run_live(
    recognizer: EmotionRecognizer,
    source: str | int = 0,
    window: bool = True,
    output: str | os.PathLike | None = None,
    max_frames: int | None = None,
) -> dict:
    """Show (or write) every frame of a live source with faces, emotions and FPS; `q` quits the window."""
    if window:
        check_window()
    capture = open_source(source)
    tracker, writer = Tracker(), None
    frames, fps = 0, 0.0
    started = last = time.perf_counter()
    try:
        while max_frames is None or frames < max_frames:
            ok, frame = capture.read()
            if not ok:
                if frames == 0:
                    raise FerlabError(f"{source} gives no frames; check the camera or the file.")
                break
            faces = recognizer.predict(frame)
            shown = draw_faces(frame, faces, tracker.update([face.box for face in faces]))
            now = time.perf_counter()
            rate = 1 / max(now - last, 1e-6)  # the whole loop: read, predict, draw, show
            fps, last = (rate if fps == 0 else 0.9 * fps + 0.1 * rate), now
            draw_fps(shown, fps)
            frames += 1
            if output is not None:
                if writer is None:
                    writer = open_writer(output, frame_rate(capture), (shown.shape[1], shown.shape[0]))
                writer.write(shown)
            if window:
                cv2.imshow(WINDOW, shown)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
    except KeyboardInterrupt:
        pass  # Ctrl+C ends a headless run; what was written is kept
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if window:
            cv2.destroyAllWindows()
    seconds = time.perf_counter() - started
    return {
        "source": str(source),
        "frames": frames,
        "seconds": round(seconds, 2),
        "fps": round(frames / seconds, 2) if seconds else None,
        "output": None if output is None else str(output),
    }
