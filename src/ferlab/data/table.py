"""The raw table: one row per image (id, split, label, 48x48 uint8 pixels), stored as Parquet."""

import hashlib
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ferlab.contract import EMOTIONS, IMAGE_SIZE, PIXELS_PER_IMAGE, SPLITS
from ferlab.errors import DataError
from ferlab.fileio import atomic_path

COLUMNS = ("id", "split", "label", "pixels")
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("label", pa.int8()),
        ("pixels", pa.binary()),  # PIXELS_PER_IMAGE bytes, row-major
    ]
)


def make_table(ids, splits, labels, images: np.ndarray) -> pd.DataFrame:
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(ids), PIXELS_PER_IMAGE)
    return pd.DataFrame(
        {
            "id": pd.Series(list(ids), dtype=object),
            "split": pd.Series(list(splits), dtype=object),
            "label": np.asarray(labels, dtype=np.int8),
            "pixels": [row.tobytes() for row in images],
        }
    )


def images_of(table: pd.DataFrame) -> np.ndarray:
    """(N, 48, 48) uint8 array of the table's pixels, in row order."""
    if len(table) == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    flat = np.frombuffer(b"".join(table["pixels"]), dtype=np.uint8)
    return flat.reshape(len(table), IMAGE_SIZE, IMAGE_SIZE)


def class_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per split and emotion, zeros included; labels outside 0..6 are not counted (validation reports them)."""
    counts = {}
    for split in SPLITS:
        labels = table.loc[table["split"] == split, "label"].to_numpy()
        per_label = np.bincount(labels[(labels >= 0) & (labels < len(EMOTIONS))], minlength=len(EMOTIONS))
        counts[split] = {name: int(n) for name, n in zip(EMOTIONS, per_label)}
    return counts


def content_digest(table: pd.DataFrame) -> str:
    """SHA-256 over ids, splits, labels and pixels: the same data gives the same digest."""
    h = hashlib.sha256()
    for row in table.itertuples(index=False):
        h.update(f"{row.id}\0{row.split}\0{int(row.label)}\0".encode())
        h.update(row.pixels)
    return h.hexdigest()


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    arrow = pa.Table.from_pandas(table[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, compression="zstd")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    try:
        table = pq.read_table(path).to_pandas()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; run `dvc repro fetch` first.") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path} is not a readable Parquet table ({err}); run `dvc repro -f fetch`.") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}; run `dvc repro -f fetch`.")
    return table
