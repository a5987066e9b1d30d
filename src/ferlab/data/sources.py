"""Find the FER2013 source named by params.yaml, verify it, and read it into the raw table.

`fetch.source` is one of:
- a path to archive.zip, an extracted folder (holding train/ and test/), or fer2013.csv;
- `kaggle`: download msambare/fer2013 with the Kaggle API;
- `auto`: the first that exists of the drop folder data/external/, the `fetch.candidates`
  paths, then Kaggle if credentials are present.
"""

from dataclasses import dataclass
from pathlib import Path

from ferlab.data import kaggle
from ferlab.data.readers import ReadResult, read_csv, read_image_archive, read_image_folder
from ferlab.errors import DataError
from ferlab.fileio import sha256_of

DROP_NAMES = ("archive.zip", "fer2013.zip", "fer2013.csv", "fer2013")


@dataclass(frozen=True)
class Source:
    kind: str  # "archive", "folder" or "csv"
    path: Path


def classify(path: Path) -> Source:
    if path.is_dir():
        return Source("folder", path)
    if not path.is_file():
        raise DataError(f"the FER2013 source {path} does not exist.")
    if path.suffix.lower() == ".csv":
        return Source("csv", path)
    if path.suffix.lower() == ".zip":
        return Source("archive", path)
    raise DataError(f"{path} is neither a .zip archive, a .csv file nor a folder; cannot read FER2013 from it.")


def _drop_folder_candidates(drop: Path) -> list[Path]:
    found = [drop / name for name in DROP_NAMES if (drop / name).exists()]
    if (drop / "train").is_dir() and (drop / "test").is_dir():
        found.append(drop)
    return found


def resolve(source: str, root: Path, drop_folder: str, candidates: list[str], cache_dir: str, client_factory=None) -> Source:
    """Turn the `fetch.source` param into a concrete, existing source."""
    if source == "kaggle":
        return classify(kaggle.download(root / cache_dir, client_factory=client_factory))
    if source != "auto":
        return classify((root / source).resolve())
    for path in _drop_folder_candidates(root / drop_folder) + [(root / c) for c in candidates]:
        if path.exists():
            return classify(path.resolve())
    if kaggle.credentials_present() or client_factory is not None:
        return classify(kaggle.download(root / cache_dir, client_factory=client_factory))
    tried = ", ".join([str(root / drop_folder / n) for n in DROP_NAMES] + [str(root / c) for c in candidates])
    raise DataError(
        "FER2013 was not found. Provide it in one of these ways: "
        f"(1) put the Kaggle archive.zip, the extracted train/ and test/ folders, or fer2013.csv into {root / drop_folder}/; "
        "(2) point params.yaml at it: `dvc exp run -S fetch.source=/path/to/archive.zip` (or a folder or fer2013.csv); "
        f"(3) let ferlab download it from Kaggle: {kaggle.HOW_TO_AUTHENTICATE}. "
        f"Looked for: {tried}."
    )


def expected_sha256(path: Path, known: dict[str, str]) -> str | None:
    """A checksum from params (by file name) or from a SHA256SUMS file next to the source."""
    if path.name in known:
        return known[path.name].lower()
    sums = path.parent / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == path.name:
                return parts[0].lower()
    return None


def verify(source: Source, known: dict[str, str]) -> str | None:
    """SHA-256 of a file source, checked against the known value if there is one."""
    if source.kind == "folder":
        return None
    actual = sha256_of(source.path)
    expected = expected_sha256(source.path, known)
    if expected and actual != expected:
        raise DataError(
            f"{source.path} has SHA-256 {actual}, expected {expected}: the file is corrupt, truncated "
            "or a different release; download it again (or fix fetch.sha256 in params.yaml if you trust it)."
        )
    return actual


def read(source: Source, limit: int | None = None, seed: int = 0, progress=None) -> ReadResult:
    reader = {"archive": read_image_archive, "folder": read_image_folder, "csv": read_csv}[source.kind]
    return reader(source.path, limit=limit, seed=seed, progress=progress)
