"""DVC stage `fetch`: FER2013 from the configured source -> data/raw/ (Parquet table + summary)."""

from pathlib import Path

from ferlab import params as params_mod
from ferlab.data.fetch import fetch
from ferlab.stage import log, run


def main() -> None:
    params = params_mod.load()
    summary = fetch(params, Path.cwd(), progress=log)
    per_split = ", ".join(f"{s} {sum(c.values()):,}" for s, c in summary["counts"].items())
    log(f"wrote {params.paths.raw_table}: {summary['rows']:,} images ({per_split})")


if __name__ == "__main__":
    run(main)
