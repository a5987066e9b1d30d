"""The fetch stage's logic: resolve the source, verify it, read it, write data/raw/ atomically."""

from pathlib import Path

from ferlab.config import Params
from ferlab.data import sources
from ferlab.data.table import class_counts, content_digest, write_table
from ferlab.errors import DataError
from ferlab.fileio import atomic_path, write_json


def fetch(params: Params, root: Path, client_factory=None, progress=None, source_root: Path | None = None) -> dict:
    """Read the source into the raw table under `root`; relative source paths (drop folder,
    candidates, Kaggle cache) are taken from `source_root` (default: `root`)."""
    cfg = params.fetch
    source = sources.resolve(cfg.source, source_root or root, cfg.drop_folder, cfg.candidates, cfg.kaggle_cache, client_factory)
    if progress:
        progress(f"source: {source.kind} {source.path}")
    sha256 = sources.verify(source, cfg.sha256)
    result = sources.read(source, limit=cfg.limit_per_class, seed=params.seed, progress=progress)
    if len(result.unreadable) > cfg.max_unreadable:
        listed = "; ".join(result.unreadable[:5]) + (" ..." if len(result.unreadable) > 5 else "")
        raise DataError(
            f"{source.path}: {len(result.unreadable)} image(s) could not be read ({listed}); "
            f"fix or replace the source, or allow them with fetch.max_unreadable (now {cfg.max_unreadable})."
        )
    for problem in result.unreadable:
        if progress:
            progress(f"warning: skipped unreadable image {problem}")
    table = result.table
    summary = {
        "source": {
            "kind": source.kind,
            "path": str(source.path),
            "sha256": sha256,
            "sha256_verified": sha256 is not None and sources.expected_sha256(source.path, cfg.sha256) is not None,
        },
        "table_sha256": content_digest(table),
        "rows": len(table),
        "limit_per_class": cfg.limit_per_class,
        "unreadable": result.unreadable,
        "counts": class_counts(table),
    }
    raw_dir = Path(root / params.paths.raw_table).parent
    if Path(root / params.paths.raw_summary).parent != raw_dir:
        raise DataError("params.yaml: paths.raw_table and paths.raw_summary must be in the same folder.")
    with atomic_path(raw_dir) as staged:
        staged.mkdir()
        write_table(table, staged / Path(params.paths.raw_table).name)
        write_json(staged / Path(params.paths.raw_summary).name, summary)
    return summary
