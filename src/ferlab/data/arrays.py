"""Training arrays from the raw table: split, clean, weight, oversample."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ferlab.config import Preprocess
from ferlab.contract import EMOTIONS, TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT
from ferlab.data.quality import image_facts
from ferlab.data.table import images_of

ARRAY_FILE = "arrays.npz"
META_FILE = "meta.json"
# split name -> key prefix in arrays.npz
SPLIT_KEYS = {TRAIN_SPLIT: "train", VAL_SPLIT: "val", TEST_SPLIT: "test"}


@dataclass
class Arrays:
    x: dict[str, np.ndarray]  # "train"/"val"/"test" -> (N, 48, 48) uint8
    y: dict[str, np.ndarray]  # -> (N,) int8 label ids
    ids: dict[str, np.ndarray]
    dropped: dict[str, list[str]] = field(default_factory=dict)


def class_weights(y: np.ndarray, mode: str) -> dict[int, float] | None:
    """none | balanced (n / (k * n_c)) | sqrt (its square root, a gentler correction)."""
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=len(EMOTIONS)).astype(float)
    weights = len(y) / (len(EMOTIONS) * np.maximum(counts, 1))
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise ValueError(f"preprocess.class_weights must be none, balanced or sqrt, not {mode!r}")
    return {i: round(float(w), 4) for i, w in enumerate(weights)}


def oversample(x: np.ndarray, y: np.ndarray, ids: np.ndarray, min_count: int, seed: int):
    """Repeat images of classes with fewer than `min_count` until they reach it."""
    if min_count <= 0:
        return x, y, ids
    rng = np.random.default_rng(seed)
    extra = []
    for label in range(len(EMOTIONS)):
        members = np.flatnonzero(y == label)
        if 0 < len(members) < min_count:
            extra.append(rng.choice(members, min_count - len(members), replace=True))
    if not extra:
        return x, y, ids
    index = np.concatenate([np.arange(len(y)), *extra])
    return x[index], y[index], ids[index]


def build(table: pd.DataFrame, cfg: Preprocess, blank_std_max: float, seed: int) -> Arrays:
    facts = image_facts(table, blank_std_max)
    drop = pd.Series(False, index=table.index)
    if cfg.drop_blank_train:
        drop |= (facts["split"] == TRAIN_SPLIT) & facts["near_blank"]
    if cfg.drop_test_leaks:
        drop |= facts["leaked_from_training"]
    images = images_of(table)
    arrays = Arrays({}, {}, {}, {})
    for split, key in SPLIT_KEYS.items():
        in_split = (table["split"] == split).to_numpy()
        keep = in_split & ~drop.to_numpy()
        arrays.dropped[key] = table.loc[in_split & drop.to_numpy(), "id"].tolist()
        arrays.x[key] = images[keep]
        arrays.y[key] = table["label"].to_numpy()[keep].astype(np.int8)
        arrays.ids[key] = table["id"].to_numpy()[keep].astype(str)
    arrays.x["train"], arrays.y["train"], arrays.ids["train"] = oversample(
        arrays.x["train"], arrays.y["train"], arrays.ids["train"], cfg.oversample_min_count, seed
    )
    return arrays


def save(arrays: Arrays, path) -> None:
    payload = {}
    for key in SPLIT_KEYS.values():
        payload[f"x_{key}"], payload[f"y_{key}"], payload[f"ids_{key}"] = arrays.x[key], arrays.y[key], arrays.ids[key]
    with open(path, "wb") as f:
        np.savez(f, **payload)


def load(path) -> Arrays:
    with np.load(path) as data:
        keys = SPLIT_KEYS.values()
        return Arrays({k: data[f"x_{k}"] for k in keys}, {k: data[f"y_{k}"] for k in keys}, {k: data[f"ids_{k}"] for k in keys})
