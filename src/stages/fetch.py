"""DVC stage `fetch`: FER2013 from the configured source -> data/raw/ (Parquet table + summary)."""

from pathlib import Path

from ferlab import config
from ferlab.data.fetch import fetch
from ferlab.stage import log, run


def main() -> None:
    params = config.load()
    # The project's root, also under `dvc exp run --temp` (which runs in a copy under
    # .dvc/tmp/exps/ without the git-ignored drop folder): relative sources are found there.
    summary = fetch(params, Path.cwd(), progress=log, source_root=config.project_root())
    per_split = ", ".join(f"{s} {sum(c.values()):,}" for s, c in summary["counts"].items())
    log(f"wrote {params.paths.raw_table}: {summary['rows']:,} images ({per_split})")


if __name__ == "__main__":
    run(main)
