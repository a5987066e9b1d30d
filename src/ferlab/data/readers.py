"""Read FER2013 from its two common forms into the raw table.

- the Kaggle image-folder archive (train/<emotion>/Training_<n>.jpg,
  test/<emotion>/PublicTest_<n>.jpg, test/<emotion>/PrivateTest_<n>.jpg), zipped or extracted;
- the challenge CSV fer2013.csv (emotion, pixels, Usage).
"""

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from ferlab.contract import EMOTIONS, IMAGE_SIZE, PIXELS_PER_IMAGE, SPLITS, TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT, emotion_id
from ferlab.data.table import make_table
from ferlab.errors import DataError

FOLDER_SPLITS = {"train": {TRAIN_SPLIT}, "test": {VAL_SPLIT, TEST_SPLIT}}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CSV_COLUMNS = ("emotion", "pixels", "Usage")
_NAME = re.compile(r"^(Training|PublicTest|PrivateTest)_(\d+)$")


@dataclass
class ReadResult:
    table: pd.DataFrame
    unreadable: list[str] = field(default_factory=list)  # "member: reason"


@dataclass(frozen=True)
class _Entry:
    member: str  # path inside the archive or folder, for messages
    split: str
    label: int
    id: str


def stratified_pick(keys: list[tuple[str, int]], limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most `limit` items per (split, label), chosen reproducibly."""
    if limit is None:
        return np.arange(len(keys))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))
    taken: dict[tuple[str, int], int] = {}
    picked = []
    for i in order:
        if taken.get(keys[i], 0) < limit:
            taken[keys[i]] = taken.get(keys[i], 0) + 1
            picked.append(i)
    return np.sort(np.asarray(picked, dtype=int))


def _parse_layout(members: list[str], source: Path) -> list[_Entry]:
    entries, strays = [], []
    for member in members:
        parts = PurePosixPath(member).parts
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        # Accept one wrapping folder (fer2013/train/...) as produced by some zips.
        if len(parts) == 4 and parts[1] in FOLDER_SPLITS:
            parts = parts[1:]
        if len(parts) != 3 or parts[0] not in FOLDER_SPLITS:
            strays.append(member)
            continue
        folder, emotion, name = parts
        stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix.lower()
        match = _NAME.match(stem)
        if emotion.lower() not in EMOTIONS or suffix not in IMAGE_SUFFIXES or not match:
            strays.append(member)
            continue
        if match.group(1) not in FOLDER_SPLITS[folder]:
            raise DataError(
                f"{source}: {member} is a {match.group(1)} image inside {folder}/; "
                "the archive's folders and file names disagree, so it is not the FER2013 layout."
            )
        # File numbers repeat across emotion folders in the Kaggle archive (different
        # images), so the id keeps the folders.
        entries.append(_Entry(member, match.group(1), emotion_id(emotion), f"{folder}/{emotion}/{stem}"))
    if not entries or strays:
        found = sorted({PurePosixPath(m).parts[0] for m in members if m.strip("/")})[:8]
        example = f"; unexpected entries such as {', '.join(strays[:3])}" if strays else ""
        raise DataError(
            f"{source} is not the FER2013 image-folder layout: expected "
            f"train/<emotion>/Training_<n>.jpg and test/<emotion>/(PublicTest|PrivateTest)_<n>.jpg "
            f"with <emotion> one of {', '.join(EMOTIONS)}; found top-level entries "
            f"{', '.join(found) or 'none'}{example}."
        )
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DataError(f"{source}: the image {dup} appears twice.")
    return entries


def _decode(data: bytes) -> tuple[np.ndarray | None, str]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if image is None:
        return None, "not a decodable image"
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        return None, f"{image.shape[1]}x{image.shape[0]} pixels instead of {IMAGE_SIZE}x{IMAGE_SIZE}"
    return image, ""


def _read_entries(entries: list[_Entry], read: Callable[[str], bytes], limit: int | None, seed: int, progress) -> ReadResult:
    entries = sorted(entries, key=lambda e: (SPLITS.index(e.split), e.id))
    picked = stratified_pick([(e.split, e.label) for e in entries], limit, seed)
    kept, images, unreadable = [], [], []
    for n, i in enumerate(picked):
        entry = entries[i]
        image, problem = _decode(read(entry.member))
        if image is None:
            unreadable.append(f"{entry.member}: {problem}")
        else:
            kept.append(entry)
            images.append(image)
        if progress and (n + 1) % 5000 == 0:
            progress(f"decoded {n + 1:,}/{len(picked):,} images")
    array = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    table = make_table([e.id for e in kept], [e.split for e in kept], [e.label for e in kept], array)
    return ReadResult(table, unreadable)


def read_image_archive(path: Path, limit: int | None = None, seed: int = 0, progress=None) -> ReadResult:
    """Read a zipped image-folder FER2013."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [i.filename for i in archive.infolist() if not i.is_dir()]
            entries = _parse_layout(members, path)

            def read(member: str) -> bytes:
                try:
                    return archive.read(member)
                except (zipfile.BadZipFile, EOFError, OSError) as err:
                    raise DataError(f"{path} is corrupt: {member} cannot be extracted ({err}); download the archive again.") from None

            return _read_entries(entries, read, limit, seed, progress)
    except zipfile.BadZipFile as err:
        raise DataError(f"{path} is not a readable zip archive ({err}); it may be truncated: download it again.") from None


def read_image_folder(path: Path, limit: int | None = None, seed: int = 0, progress=None) -> ReadResult:
    """Read an extracted image-folder FER2013 (the folder holding train/ and test/)."""
    members = [p.relative_to(path).as_posix() for p in sorted(path.rglob("*")) if p.is_file()]
    entries = _parse_layout(members, path)
    return _read_entries(entries, lambda m: (path / m).read_bytes(), limit, seed, progress)


def read_csv(path: Path, limit: int | None = None, seed: int = 0, progress=None) -> ReadResult:
    """Read the challenge CSV; any malformed row stops the read with its line number."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a readable CSV file ({err}).") from None
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)}: fer2013.csv has the columns "
            f"{', '.join(CSV_COLUMNS)}; found {', '.join(map(str, frame.columns)) or 'none'}."
        )

    def line(i: int) -> str:
        return f"{path}, line {i + 2}"  # the header is line 1

    for i, usage in enumerate(frame["Usage"]):
        if usage not in SPLITS:
            raise DataError(f"{line(i)}: unknown Usage {usage!r}; expected one of {', '.join(SPLITS)}.")
    labels = pd.to_numeric(frame["emotion"], errors="coerce")
    bad = labels.isna() | ~labels.isin(range(len(EMOTIONS)))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{line(i)}: emotion {frame['emotion'].iloc[i]!r} is not a label id 0..{len(EMOTIONS) - 1}.")

    keys = list(zip(frame["Usage"], labels.astype(int)))
    picked = stratified_pick(keys, limit, seed)
    images = np.zeros((len(picked), PIXELS_PER_IMAGE), np.uint8)
    for n, i in enumerate(picked):
        try:
            values = np.array(frame["pixels"].iloc[i].split(), dtype=np.int64)
        except ValueError:
            raise DataError(f"{line(i)}: the pixels are not all integers.") from None
        if values.size != PIXELS_PER_IMAGE:
            raise DataError(f"{line(i)}: {values.size} pixels instead of {PIXELS_PER_IMAGE} (48x48).")
        if values.min() < 0 or values.max() > 255:
            raise DataError(f"{line(i)}: pixel values must lie in 0..255.")
        images[n] = values
        if progress and (n + 1) % 10000 == 0:
            progress(f"parsed {n + 1:,}/{len(picked):,} rows")
    ids = [f"{frame['Usage'].iloc[i]}_{i:05d}" for i in picked]
    table = make_table(ids, frame["Usage"].iloc[picked], labels.iloc[picked].astype(int), images)
    order = sorted(range(len(table)), key=lambda r: SPLITS.index(table["split"].iloc[r]))
    return ReadResult(table.iloc[order].reset_index(drop=True))
