"""DVC stage `preprocess`: data/raw/ -> data/processed/ (arrays, class weights) + reports/preprocess/."""

from pathlib import Path

import numpy as np

from ferlab import config, contract, plots
from ferlab.contract import EMOTIONS
from ferlab.data import arrays as arrays_mod
from ferlab.data.table import read_table
from ferlab.fileio import atomic_path, write_json
from ferlab.stage import log, run
from ferlab.training import augment


def sample_sheet(arrays: arrays_mod.Arrays, policy, seed: int, faces: int, path) -> None:
    """One training face per emotion, then `faces - 1` augmented versions of it."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, name in enumerate(EMOTIONS):
        members = np.flatnonzero(arrays.y["train"] == label)
        if not len(members):
            continue
        face = arrays.x["train"][rng.choice(members)]
        batch = np.repeat(contract.normalize(face[np.newaxis]), faces - 1, axis=0)
        augmented = augment.apply(batch, (seed, label), policy).numpy() * contract.PIXEL_SCALE
        rows.append((name, [face, *np.clip(augmented, 0, 255).astype(np.uint8)]))
    plots.face_grid(rows, path, column_titles=["original"] + ["augmented"] * (faces - 1))


def main() -> None:
    params = config.load()
    cfg = params.preprocess
    table = read_table(params.paths.raw_table)
    log(f"building arrays from {len(table):,} images")
    arrays = arrays_mod.build(table, cfg, params.validate.blank_std_max, params.seed)
    weights = arrays_mod.class_weights(arrays.y["train"], cfg.class_weights)
    meta = {
        "counts": {k: np.bincount(v, minlength=len(EMOTIONS)).tolist() for k, v in arrays.y.items()},
        "emotions": list(EMOTIONS),
        "image": {"size": contract.IMAGE_SIZE, "channels": 1, "dtype": "uint8", "normalize": f"x / {contract.PIXEL_SCALE:g}"},
        "class_weights": weights,
        "dropped": {k: len(v) for k, v in arrays.dropped.items()},
        "dropped_ids": arrays.dropped,
        "oversample_min_count": cfg.oversample_min_count,
        "augment": augment.describe(cfg.augment),
    }
    with atomic_path(params.paths.processed) as staged:
        staged.mkdir()
        arrays_mod.save(arrays, staged / arrays_mod.ARRAY_FILE)
        write_json(staged / arrays_mod.META_FILE, meta)
    with atomic_path(params.paths.preprocess_report) as staged:
        staged.mkdir()
        write_json(staged / "augmentation.json", meta["augment"] | {"class_weights": weights, "dropped": meta["dropped"]})
        sample_sheet(arrays, cfg.augment, params.seed, cfg.sample_sheet_faces, staged / "augmentation_samples.png")
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in arrays.y.items())
    log(f"wrote {Path(params.paths.processed) / arrays_mod.ARRAY_FILE}: {sizes}; dropped {meta['dropped']}")


if __name__ == "__main__":
    run(main)
