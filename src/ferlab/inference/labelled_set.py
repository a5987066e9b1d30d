"""A labelled set of the user's own images: a folder with one subfolder per emotion, or a
CSV of `path,label` (and optionally `group`: the person, session or video an image comes from,
which `ferlab adapt` keeps on one side of its split). Label names are matched case-insensitively
with their usual synonyms; labels outside FER2013's seven (contempt, say) are counted and skipped,
never guessed."""

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SYNONYMS = {
    "angry": ("angry", "anger", "mad"),
    "disgust": ("disgust", "disgusted", "disgusting"),
    "fear": ("fear", "fearful", "afraid", "scared"),
    "happy": ("happy", "happiness", "joy", "joyful"),
    "sad": ("sad", "sadness"),
    "surprise": ("surprise", "surprised"),
    "neutral": ("neutral", "calm"),
}
_CANONICAL = {word: emotion for emotion, words in SYNONYMS.items() for word in words}


def emotion_of(label: str) -> str | None:
    """FER2013's name for `label` ("Happiness" -> "happy"), or None for a label outside the seven."""
    return _CANONICAL.get(label.strip().lower().replace("_", " ").replace("-", " "))


@dataclass
class LabelledSet:
    source: str
    items: list[tuple[str, str]] = field(default_factory=list)  # (image path, emotion)
    skipped: dict[str, int] = field(default_factory=dict)  # label outside the seven -> images
    problems: list[str] = field(default_factory=list)  # one sentence each
    groups: list[str] | None = None  # one per item where the CSV has a group column ("" where a row leaves it empty)

    @property
    def name(self) -> str:
        return Path(self.source).stem if Path(self.source).is_file() else Path(self.source).name


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _from_folder(root: Path) -> LabelledSet:
    found = LabelledSet(str(root))
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = _images_in(sub)
        emotion = emotion_of(sub.name)
        if emotion is None:
            found.skipped[sub.name] = found.skipped.get(sub.name, 0) + len(images)
        else:
            found.items += [(str(p), emotion) for p in images]
    loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if loose:
        found.problems.append(f"{len(loose)} image(s) directly in {root} are in no emotion folder and were skipped.")
    if not found.items and not found.skipped:
        raise FerlabError(
            f"{root} holds no emotion subfolders with images; make one folder per emotion "
            f"({', '.join(EMOTIONS)} or synonyms such as happiness), or pass a CSV of path,label."
        )
    return found


def _from_csv(table: Path) -> LabelledSet:
    found = LabelledSet(str(table))
    try:
        with open(table, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = {name.strip().lower(): name for name in reader.fieldnames or []}
            if not {"path", "label"} <= set(columns):
                raise FerlabError(f"{table} needs the columns path and label; it has {', '.join(reader.fieldnames or []) or 'none'}.")
            if "group" in columns:
                found.groups = []
            for line, row in enumerate(reader, start=2):
                path, label = (row[columns["path"]] or "").strip(), (row[columns["label"]] or "").strip()
                if not path or not label:
                    found.problems.append(f"{table} line {line} has no path or no label and was skipped.")
                    continue
                emotion = emotion_of(label)
                if emotion is None:
                    found.skipped[label] = found.skipped.get(label, 0) + 1
                    continue
                full = Path(path) if Path(path).is_absolute() else table.parent / path
                found.items.append((str(full), emotion))
                if found.groups is not None:
                    found.groups.append((row[columns["group"]] or "").strip())
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise FerlabError(f"{table} cannot be read as a CSV ({err}).") from None
    if not found.items and not found.skipped and not found.problems:
        raise FerlabError(f"{table} lists no images.")
    return found


def read(source: str) -> LabelledSet:
    path = Path(source)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_csv(path)
    if not path.exists():
        raise FerlabError(f"{source}: no such folder or CSV file.")
    raise FerlabError(f"{source} is neither a folder of emotion subfolders nor a .csv file of path,label.")
