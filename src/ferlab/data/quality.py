"""Per-image facts the validation suite checks: pixel statistics, blanks, duplicates, leakage."""

import hashlib

import numpy as np
import pandas as pd

from ferlab.contract import FULL_COUNTS, PIXELS_PER_IMAGE, SPLITS, TRAIN_SPLIT
from ferlab.data import table as table_mod


def image_facts(table: pd.DataFrame, blank_std_max: float) -> pd.DataFrame:
    """The raw table's columns plus one row of measured facts per image."""
    facts = table.copy()
    facts["pixel_count"] = table["pixels"].map(len).astype("int64")
    std, digest = [], []
    for raw in table["pixels"]:
        values = np.frombuffer(raw, np.uint8)
        std.append(float(values.std()) if values.size else 0.0)
        digest.append(hashlib.sha1(raw).hexdigest())
    facts["pixel_std"] = std
    facts["digest"] = digest
    facts["near_blank"] = facts["pixel_std"] <= blank_std_max
    facts["duplicate_in_split"] = facts.duplicated(["split", "digest"], keep=False)
    train_digests = set(facts.loc[facts["split"] == TRAIN_SPLIT, "digest"])
    facts["leaked_from_training"] = (facts["split"] != TRAIN_SPLIT) & facts["digest"].isin(train_digests)
    return facts


def class_counts(table: pd.DataFrame, exact: bool) -> pd.DataFrame:
    """One row per (split, emotion), zeros included, with the share of its split and the expected count."""
    rows = []
    for split, per_emotion in table_mod.class_counts(table).items():
        size = max(int((table["split"] == split).sum()), 1)
        for label, (name, n) in enumerate(per_emotion.items()):
            rows.append(
                {"split": split, "emotion": name, "n": n, "share": n / size, "expected_n": FULL_COUNTS[split][label] if exact else n}
            )
    return pd.DataFrame(rows)


def findings(facts: pd.DataFrame) -> dict:
    """Counts a person reads in the report: blanks, duplicates and leakage, per split."""
    leak_pairs = {}
    by_split = {s: set(facts.loc[facts["split"] == s, "digest"]) for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            shared = by_split[a] & by_split[b]
            leak_pairs[f"{a}~{b}"] = int(facts.loc[facts["split"] == b, "digest"].isin(shared).sum())
    dup_groups = facts[facts["duplicate_in_split"]].groupby(["split", "digest"]).size()
    conflicting = facts[facts["duplicate_in_split"]].groupby(["split", "digest"])["label"].nunique()
    return {
        "near_blank": {s: int(facts.loc[facts["split"] == s, "near_blank"].sum()) for s in SPLITS},
        "near_blank_examples": facts.loc[facts["near_blank"], "id"].head(10).tolist(),
        "duplicates_within_split": {
            s: {
                "images": int(facts.loc[facts["split"] == s, "duplicate_in_split"].sum()),
                "groups": int(dup_groups.get(s, pd.Series(dtype=int)).size),
                "groups_with_conflicting_labels": int((conflicting.get(s, pd.Series(dtype=int)) > 1).sum()),
            }
            for s in SPLITS
        },
        "duplicates_across_splits": leak_pairs,  # images of the second split also found in the first
        "pixels_per_image": PIXELS_PER_IMAGE,
    }
