"""`ferlab batch` as a user runs it: a real process with worker processes, real photos and broken
files, a tiny trained bundle (its TFLite model), and runs that are really interrupted: Ctrl+C,
a worker that hangs (reading a named pipe that nobody writes), a worker killed, then resumed."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ferlab.contract import EMOTIONS
from integration.photo_set import FACES, NO_FACE, UNREADABLE, write_photos

COLUMNS = ["path", "face", "x", "y", "w", "h", "confidence", "emotion", *EMOTIONS, "error"]


def env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FERLAB_MODEL", "TF_CPP_"))}
    return env


def batch_command(*args) -> list[str]:
    return [sys.executable, "-m", "ferlab.cli", "batch", *map(str, args)]


def batch(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(batch_command(*args), capture_output=True, text=True, cwd=cwd, env=env(), timeout=timeout)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def detected_faces(model: Path, cwd: Path) -> list[dict]:
    """`ferlab detect --json` of the photos with faces, for comparison."""
    command = [sys.executable, "-m", "ferlab.cli", "detect", *(f"photos/{n}" for n in FACES), "--json", "--model", str(model)]
    return json.loads(subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env(), check=True).stdout)


def rows_by_path(path: Path) -> dict[str, list[dict]]:
    table = pq.read_table(path).to_pylist() if path.suffix == ".parquet" else list(csv.DictReader(open(path)))
    found: dict[str, list[dict]] = {}
    for row in table:
        found.setdefault(Path(row["path"]).name, []).append(row)
    return found


def wait_for(condition, seconds: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"ferlab batch ended ({proc.returncode}) before {what}:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds} s")
        time.sleep(0.1)


@pytest.fixture
def photos(tmp_path) -> Path:
    return write_photos(tmp_path / "photos")


@pytest.fixture
def stalled_list(tmp_path, photos) -> Path:
    """A CSV of paths whose first entry is a named pipe: the worker that reads it waits until
    someone writes to it, while the other worker scores the rest (one image per part)."""
    os.mkfifo(photos / "pipe.jpg")
    names = ["pipe.jpg", *FACES, NO_FACE]
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"photos/{name}\n" for name in names))
    return tmp_path / "list.csv"


def parts_of(output: Path) -> list[Path]:
    return sorted(Path(f"{output}.parts").glob("part-*.parquet"))


# ---- a whole run ------------------------------------------------------------------------------


def test_a_folder_gives_one_row_per_face_with_what_detect_reports(tmp_path, photos, tiny_bundle):
    result = batch("photos", "faces.parquet", "--model", tiny_bundle, "--workers", 2, "--part-size", 2, cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # two files are not images
    assert result.stdout.strip() == "faces.parquet: 7 images, 4 faces; 1 without a face, 2 unreadable (see the error column)."
    assert errors(result.stderr) == [
        "error: photos/empty.jpg is empty (0 bytes); it is not an image.",
        "error: photos/notes.jpg is not a readable image (corrupt, truncated or not an image file); "
        "check it or save it again as JPEG or PNG.",
        "error: 2 of 7 images could not be read; faces.parquet is complete otherwise.",
    ]
    assert "Traceback" not in result.stderr and "XNNPACK" not in result.stderr
    table = pq.read_table(tmp_path / "faces.parquet")
    assert table.column_names == COLUMNS
    assert table.schema.field("x").type == pa.int32() and table.schema.field("happy").type == pa.float64()
    assert [Path(p).name for p in table.column("path").to_pylist()] == sorted(FACES + UNREADABLE + (NO_FACE,))  # input order
    found = rows_by_path(tmp_path / "faces.parquet")
    assert found[NO_FACE] == [dict.fromkeys(COLUMNS) | {"path": f"photos/{NO_FACE}"}]  # no face: face and error null
    for name in UNREADABLE:
        (row,) = found[name]
        assert row["face"] is None and row["emotion"] is None and f"photos/{name}" in row["error"]

    for image in detected_faces(tiny_bundle, cwd=tmp_path):
        (face,) = image["faces"]
        (row,) = found[Path(image["path"]).name]
        assert row["face"] == 0 and row["error"] is None
        assert [row[k] for k in "xywh"] == [face["box"][k] for k in "xywh"]
        assert row["emotion"] == face["emotion"] and row["confidence"] == pytest.approx(face["confidence"])
        assert [row[e] for e in EMOTIONS] == pytest.approx([face["probabilities"][e] for e in EMOTIONS], abs=1e-6)

    again = batch("photos", "faces.parquet", "--model", tiny_bundle, cwd=tmp_path)
    assert again.returncode == 1 and errors(again.stderr) == [
        "error: faces.parquet already exists; pass --overwrite to score photos again, or choose another OUTPUT."
    ]


def test_csv_of_paths_and_parquet_of_images_give_the_same_rows_as_the_folder(tmp_path, photos, tiny_bundle):
    names = sorted(FACES + (NO_FACE,) + UNREADABLE)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "paths.csv").write_text("Path,note\n" + "".join(f"../photos/{n},x\n" for n in names))  # relative to the CSV
    images = pa.table({"path": [f"photos/{n}" for n in names], "content": [(photos / n).read_bytes() for n in names]})
    pq.write_table(images, tmp_path / "images.parquet", row_group_size=3)  # parts follow row groups

    from_folder = batch("photos", "folder.csv", "--model", tiny_bundle, "--workers", 1, cwd=tmp_path)
    from_csv = batch("lists/paths.csv", "listed.parquet", "--model", tiny_bundle, "--part-size", 2, cwd=tmp_path)
    from_parquet = batch("images.parquet", "table.parquet", "--model", tiny_bundle, "--part-size", 2, cwd=tmp_path)
    for result in (from_folder, from_csv, from_parquet):
        assert result.returncode == 1 and "7 images, 4 faces; 1 without a face, 2 unreadable" in result.stdout, result.stderr

    with open(tmp_path / "folder.csv") as f:
        assert next(csv.reader(f)) == COLUMNS  # the CSV has the same columns, faces written as `ferlab detect --csv` does
    folder = rows_by_path(tmp_path / "folder.csv")
    listed, table = rows_by_path(tmp_path / "listed.parquet"), rows_by_path(tmp_path / "table.parquet")
    assert listed["small.png"][0]["path"] == "../photos/small.png"  # as the CSV names it
    for name in names:
        (a,), (b,), (c,) = folder[name], listed[name], table[name]
        assert (b["error"] is None) == (c["error"] is None)
        assert {k: b[k] for k in COLUMNS[1:-1]} == {k: c[k] for k in COLUMNS[1:-1]}
        if b["face"] is not None:
            assert a["emotion"] == b["emotion"] and [float(a[e]) for e in EMOTIONS] == pytest.approx([b[e] for e in EMOTIONS], abs=5e-5)
            assert a["confidence"] == f"{b['confidence']:.4f}" and a["x"] == str(b["x"])


def test_a_model_of_fewer_emotions_writes_its_own_columns(tmp_path, photos, subset_bundle):
    subset = ["happy", "sad", "neutral"]
    for output in ("faces.parquet", "faces.csv"):
        result = batch("photos", output, "--model", subset_bundle, "--workers", 2, "--part-size", 2, cwd=tmp_path)
        assert result.returncode == 1 and "7 images, 4 faces; 1 without a face, 2 unreadable" in result.stdout, result.stderr
    assert pq.read_table(tmp_path / "faces.parquet").column_names == [*COLUMNS[:8], *subset, "error"]
    with open(tmp_path / "faces.csv") as f:
        assert next(csv.reader(f)) == [*COLUMNS[:8], *subset, "error"]
    found = rows_by_path(tmp_path / "faces.parquet")
    for image in detected_faces(subset_bundle, cwd=tmp_path):
        ((face,), (row,)) = image["faces"], found[Path(image["path"]).name]
        assert list(face["probabilities"]) == subset and row["emotion"] == face["emotion"] in subset
        assert [row[e] for e in subset] == pytest.approx([face["probabilities"][e] for e in subset], abs=1e-6)


def test_bad_input_and_output_are_one_sentence(tmp_path, photos, tiny_bundle):
    (tmp_path / "wrong.csv").write_text("file,label\na.jpg,happy\n")
    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "wrong.parquet")
    cases = [
        (("photos", "faces.json"), "error: faces.json must end in .parquet or .csv (the output's format)."),
        (("wrong.csv", "out.csv"), "error: wrong.csv needs a column named path; it has file, label."),
        (("wrong.parquet", "out.csv"), "error: wrong.parquet has neither a column of encoded images (binary, e.g. content) nor a path"),
        (("nowhere/", "out.csv"), "error: nowhere/: no such file or folder; check the path."),
        (("*.gif", "out.csv"), "error: *.gif matches no file."),
        (("photos", "out.csv", "--model", tmp_path / "missing"), "error: no model at "),
    ]
    for args, expected in cases:
        result = batch(*args, cwd=tmp_path)
        assert result.returncode == 1 and len(errors(result.stderr)) == 1, result.stderr
        assert errors(result.stderr)[0].startswith(expected) and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("out.csv*"))  # nothing left behind, no parts folder either


# ---- runs that stop, and resume ----------------------------------------------------------------


def test_ctrl_c_keeps_the_finished_parts_and_the_same_command_resumes(tmp_path, photos, stalled_list, tiny_bundle):
    args = ("list.csv", "faces.parquet", "--model", tiny_bundle, "--workers", 2, "--part-size", 1)
    # started with SIGINT ignored, as a shell starts a background job (and as it was inherited in a full test run)
    proc = subprocess.Popen(
        batch_command(*args),
        cwd=tmp_path,
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        wait_for(lambda: len(parts_of(tmp_path / "faces.parquet")) == 5, 180, "5 finished parts", proc)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C: the terminal signals the whole process group
        try:
            stderr = proc.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:  # say which of its processes still runs, and where it waits
            group = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,args", "--sid", str(proc.pid)], capture_output=True, text=True)
            raise AssertionError(f"ferlab batch did not end within 60 s of Ctrl+C; its processes:\n{group.stdout}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert errors(stderr) == ["error: interrupted; 5 of 6 parts are kept in faces.parquet.parts: run the same command again to resume."], (
        stderr
    )
    assert not (tmp_path / "faces.parquet").exists()
    kept = parts_of(tmp_path / "faces.parquet")
    assert sum(pq.read_table(p).num_rows for p in kept) == 5  # every finished part is whole and readable

    changed = batch(*args, "--tta", "none", cwd=tmp_path)
    assert changed.returncode == 1 and errors(changed.stderr) == [
        "error: faces.parquet.parts holds an unfinished run with a different set of model options; run that command again to "
        "finish it, or delete faces.parquet.parts (or pass --overwrite) to start afresh."
    ]

    (photos / "pipe.jpg").unlink()
    (photos / "pipe.jpg").write_bytes((photos / "astronaut.jpg").read_bytes())
    (photos / "small.png").write_bytes(b"")  # scored before the interruption: not read again
    resumed = batch(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 5 of 6 images were scored by an earlier run" in resumed.stderr
    assert resumed.stdout.strip() == "faces.parquet: 6 images, 5 faces; 1 without a face, 0 unreadable (see the error column)."
    found = rows_by_path(tmp_path / "faces.parquet")
    assert sorted(found) == sorted(["pipe.jpg", *FACES, NO_FACE]) and all(len(rows) == 1 for rows in found.values())
    assert found["small.png"][0]["face"] == 0 and found["pipe.jpg"][0]["emotion"] in EMOTIONS
    assert not Path(f"{tmp_path / 'faces.parquet'}.parts").exists()


def test_a_worker_that_hangs_stops_the_run_with_the_image_named(tmp_path, photos, stalled_list, tiny_bundle):
    result = batch("list.csv", "faces.csv", "--model", tiny_bundle, "--workers", 2, "--part-size", 1, "--timeout", 3, cwd=tmp_path)
    assert result.returncode == 1
    (message,) = errors(result.stderr)
    assert message.startswith("error: worker ") and message.endswith(
        " has not answered for 3 s on photos/pipe.jpg (move it away if it hangs again); 5 of 6 parts are kept in faces.csv.parts: "
        "run the same command again to resume."
    )
    assert len(list(Path(f"{tmp_path / 'faces.csv'}.parts").glob("part-*.csv"))) == 5


def test_a_worker_killed_stops_the_run_and_loses_nothing_written(tmp_path, photos, stalled_list, tiny_bundle):
    args = ("list.csv", "faces.parquet", "--model", tiny_bundle, "--workers", 2, "--part-size", 1)
    proc = subprocess.Popen(batch_command(*args), cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(parts_of(tmp_path / "faces.parquet")) == 5, 180, "5 finished parts", proc)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [pid for pid in children if "multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert workers  # the one reading the pipe at least; the other may have finished its parts and left
        for pid in workers:
            os.kill(int(pid), signal.SIGKILL)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    (message,) = errors(stderr)
    assert message.startswith("error: worker ") and " stopped (killed by signal 9)" in message
    assert message.endswith("; 5 of 6 parts are kept in faces.parquet.parts: run the same command again to resume.")
    assert sum(pq.read_table(p).num_rows for p in parts_of(tmp_path / "faces.parquet")) == 5
