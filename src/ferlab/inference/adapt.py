"""`ferlab adapt`: fine-tune a model on the user's labelled faces and hand on a candidate that has proven itself on them.

    result = adapt("my_faces/", model="models:/ferlab-emotion@production", emotions="happy,sad,neutral")
    result.report["validation"]["after"]["accuracy"], result.bundle        # the figures, the new bundle folder

1. The user's set (`ferlab.inference.labelled_set`: a folder of emotion folders or a CSV of path,label[,group]) is
   checked before anything runs: labels outside the chosen emotions, unreadable images, images without exactly
   one face, too few faces per emotion, an emotion of VAL that DATA lacks are each one counted sentence, and
   nothing is written.
2. Without VAL, a stratified split (ferlab.data.split): by group where the CSV gives one.
3. The parent's .h5 (a bundle folder, a .h5, a registered version; not a TFLite-only model) with a head for the
   chosen emotions is fine-tuned (ferlab.training.finetune), its temperature re-fitted on the validation part.
4. Before and after on the validation part and on FER2013 PrivateTest where this machine has it, with bootstrap
   95% intervals (ferlab.training.compare), flip test-time augmentation as the tools use by default.
5. The bundle (ferlab.lifecycle.adapted.write_bundle) and, with `log`, an MLflow run and a registered version.
"""

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ferlab import config
from ferlab.contract import EMOTIONS, TEST_SPLIT, preprocessing
from ferlab.errors import FerlabError
from ferlab.inference import labelled_set
from ferlab.inference.detect import DEFAULT_DETECTOR
from ferlab.inference.images import DEFAULT_MAX_PIXELS

MIN_TRAIN_FACES, MIN_VAL_FACES = 10, 5  # per emotion, to train on and to validate on
DEFAULT_VAL_FRACTION = 0.2
UNUSABLE = ("unreadable", "no_face", "several_faces")
_SAID = {"unreadable": "cannot be read", "no_face": "hold no face the detector finds", "several_faces": "hold several faces"}


@dataclass
class UserFaces:
    """The faces of a labelled set that can be used, one per image, and what could not."""

    source: str
    paths: list[str]
    labels: list[str]
    groups: list[str]
    faces: np.ndarray  # (N, 48, 48) uint8
    digests: list[str]  # SHA-256 of each image file
    unusable: dict[str, list[str]]  # status -> "path: why" lines


@dataclass
class AdaptResult:
    bundle: Path
    report: dict
    run_id: str | None = None
    version: object | None = None  # registry.VersionInfo with --log


def parse_emotions(text: str | None, available: tuple[str, ...]) -> tuple[str, ...]:
    """--emotions "happy,Sadness,neutral" -> ("happy", "sad", "neutral"): the user's order, synonyms
    allowed, each one of the parent model's emotions."""
    if not text:
        return tuple(available)
    chosen: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        emotion = labelled_set.emotion_of(word)
        if emotion is None:
            raise FerlabError(f"--emotions: {word!r} is not one of FER2013's emotions ({', '.join(EMOTIONS)}, or a synonym).")
        if emotion not in available:
            raise FerlabError(f"--emotions: the model has no {emotion} output (it answers {', '.join(available)}).")
        if emotion in chosen:
            raise FerlabError(f"--emotions names {emotion} twice.")
        chosen.append(emotion)
    if len(chosen) < 2:
        raise FerlabError("--emotions needs at least two emotions, separated by commas (e.g. happy,sad,neutral).")
    return tuple(chosen)


def check_labels(
    labelled: labelled_set.LabelledSet, emotions: tuple[str, ...], what: str, skip: bool = False, print_fn: Callable[[str], None] = print
) -> int:
    """Every image's label must be one of the chosen emotions: those that are not are counted in one sentence
    and stop adapt, or with `skip` are left out of `labelled` (how many is returned)."""
    outside: dict[str, int] = dict(labelled.skipped)
    for _, emotion in labelled.items:
        if emotion not in emotions:
            outside[emotion] = outside.get(emotion, 0) + 1
    if outside:
        counted = ", ".join(f"{n} {label}" for label, n in sorted(outside.items(), key=lambda kv: -kv[1]))
        said = (
            f"{what} ({labelled.source}) has {sum(outside.values())} image(s) labelled outside the emotions to adapt to "
            f"({', '.join(emotions)}): {counted}"
        )
        if not skip:
            raise FerlabError(f"{said}; remove them, choose the emotions with --emotions, or leave them out with --skip-unusable.")
        print_fn(f"{said}: left out (--skip-unusable)")
        keep = [i for i, (_, e) in enumerate(labelled.items) if e in emotions]
        labelled.items = [labelled.items[i] for i in keep]
        if labelled.groups is not None:
            labelled.groups = [labelled.groups[i] for i in keep]
    if not labelled.items:
        raise FerlabError(f"{what} ({labelled.source}) holds no images labelled with the emotions to adapt to ({', '.join(emotions)}).")
    return sum(outside.values())


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_faces(labelled: labelled_set.LabelledSet, recognizer, face_crop: bool, largest_face: bool, progress: bool = True) -> UserFaces:
    """One 48x48 face per image, cropped as the tools crop (the recognizer's detector and crop contract;
    face_crop: the images are faces already). Images that cannot be read, with no face or with several
    (unless largest_face) are kept out and listed in `unusable`."""
    from tqdm import tqdm

    paths, labels, groups, faces, digests = [], [], [], [], []
    unusable: dict[str, list[str]] = {status: [] for status in UNUSABLE}
    given = labelled.groups or [""] * len(labelled.items)
    for (path, label), group in tqdm(
        list(zip(labelled.items, given)), unit="image", desc="faces", disable=not progress or None, file=sys.stderr
    ):
        try:
            detections, found = recognizer.crops(path, face_crop=face_crop)
        except FerlabError as err:
            unusable["unreadable"].append(str(err))
            continue
        if len(found) == 0:
            unusable["no_face"].append(f"{path}: no face found")
            continue
        if len(found) > 1 and not largest_face:
            unusable["several_faces"].append(f"{path}: {len(found)} faces")
            continue
        largest = max(range(len(found)), key=lambda i: detections[i].box[2] * detections[i].box[3])
        paths.append(path)
        labels.append(label)
        groups.append(group or f"image:{path}")  # an image without a group is a group of its own
        faces.append(found[largest])
        digests.append(_file_digest(path))
    stacked = np.stack(faces) if faces else np.zeros((0, 48, 48), np.uint8)
    return UserFaces(labelled.source, paths, labels, groups, stacked, digests, unusable)


def check_usable(found: UserFaces, what: str, skip_unusable: bool, print_fn: Callable[[str], None]) -> None:
    """Unusable images stop adapt (one sentence, counted, the first few named) unless skip_unusable, which
    says how many are left out."""
    counts = {status: len(lines) for status, lines in found.unusable.items() if lines}
    if not counts:
        return
    counted = "; ".join(f"{n} {_SAID[status]}" for status, n in counts.items())
    examples = "; ".join(line for lines in found.unusable.values() for line in lines[:2])
    if not skip_unusable:
        raise FerlabError(
            f"{what} ({found.source}): {sum(counts.values())} image(s) cannot be used: {counted} (e.g. {examples}). "
            "Fix or remove them, pass --face-crop if the images are faces already, --largest-face for photos of several "
            "people, or --skip-unusable to adapt on the others."
        )
    print_fn(f"{what}: left out {sum(counts.values())} image(s): {counted} (--skip-unusable)")


def check_counts(train: dict[str, int], val: dict[str, int], emotions: tuple[str, ...], fraction: float | None) -> None:
    """At least MIN_TRAIN_FACES to train on and MIN_VAL_FACES to validate on for each emotion."""
    short = [e for e in emotions if train.get(e, 0) < MIN_TRAIN_FACES or val.get(e, 0) < MIN_VAL_FACES]
    if not short:
        return
    listed = ", ".join(f"{e} ({train.get(e, 0)} to train on, {val.get(e, 0)} to validate on)" for e in short)
    need = f"at least {MIN_TRAIN_FACES} faces to train on and {MIN_VAL_FACES} to validate on for each emotion"
    if fraction is not None:
        total = int(np.ceil(max(MIN_TRAIN_FACES / (1 - fraction), MIN_VAL_FACES / fraction)))
        need += f" (about {total} per emotion with --val-fraction {fraction:g})"
    keep = [e for e in emotions if e not in short]
    advice = f", or leave them out with --emotions {','.join(keep)}" if len(keep) >= 2 else ""
    raise FerlabError(f"too few faces: {listed}; adapting needs {need}. Add faces{advice}.")


def _counts(labels: list[str]) -> dict[str, int]:
    return {e: labels.count(e) for e in dict.fromkeys(labels)}


def set_digest(rows: list[tuple[str, str, str]]) -> str:
    """The user set's digest: SHA-256 over each image's content digest, label and side, sorted (where the
    files lie does not change it; a changed pixel, label or split does)."""
    return hashlib.sha256("\n".join(sorted("\t".join(r) for r in rows)).encode()).hexdigest()


def private_test(fer2013: str | None = None, print_fn: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray, str] | None:
    """FER2013 PrivateTest faces and label ids where this machine has them: `fer2013` (an archive, folder or
    fer2013.csv), else this checkout's data/processed arrays or raw table, else the FER2013 source that
    `dvc repro`'s fetch would read (never downloaded); None where there is none."""
    from ferlab.data import arrays as arrays_mod
    from ferlab.data import sources
    from ferlab.data.table import images_of, read_table
    from ferlab.errors import DataError

    params = config.current()
    try:
        if not fer2013:
            processed = Path(params.paths.processed) / arrays_mod.ARRAY_FILE
            if processed.is_file():
                arrays = arrays_mod.load(processed)
                return arrays.x["test"], arrays.y["test"].astype(int), str(processed)
            if Path(params.paths.raw_table).is_file():
                table = read_table(params.paths.raw_table)
                table = table[table["split"] == TEST_SPLIT]
                return images_of(table), table["label"].to_numpy().astype(int), params.paths.raw_table
        root = config.project_root()
        if fer2013:
            found = sources.classify(Path(fer2013))
        else:
            env = os.environ.get("FERLAB_FER2013_ARCHIVE")
            candidates = [env] if env else []
            candidates += [str(p) for p in sources._drop_folder_candidates(root / params.fetch.drop_folder)] + params.fetch.candidates
            existing = [root / c for c in candidates if (root / c).exists()]
            if not existing:
                return None
            found = sources.classify(existing[0].resolve())
        print_fn(f"reading FER2013 PrivateTest from {found.path}")
        table = sources.read(found).table
    except DataError as err:
        if fer2013:
            raise
        print_fn(f"PrivateTest not scored: {err}")
        return None
    table = table[table["split"] == TEST_SPLIT]
    if not len(table):
        return None
    return images_of(table), table["label"].to_numpy().astype(int), str(found.path)


def _parent(model: str | None):
    """(ModelFiles, the label the tools give it, registered model name or None, version or None)."""
    from ferlab.inference.sources import label, locate, resolve
    from ferlab.lifecycle import registry

    chosen = resolve(model)
    files = locate(chosen.source)
    if files.h5 is None:
        raise FerlabError(
            f"{chosen.source} holds only a TFLite model, which cannot be fine-tuned; adapt needs its Keras .h5: pass "
            "--model models/bundle (made by `dvc repro`), a .h5 file, or a registered version (models:/<name>@<alias>)."
        )
    name = version = None
    if registry.is_uri(chosen.source):
        name, alias = registry.parse_uri(chosen.source)
        found = registry.by_alias(name, alias)
        version = found.version if found else None
    return files, label(chosen.source), name, version


def adapt(
    data: str,
    val: str | None = None,
    val_fraction: float | None = None,
    model: str | None = None,
    emotions: str | None = None,
    recipe=None,
    out: str | os.PathLike | None = None,
    face_crop: bool = False,
    largest_face: bool = False,
    skip_unusable: bool = False,
    detector: str = DEFAULT_DETECTOR,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fer2013: str | None = None,
    privatetest: bool = True,
    log: bool = False,
    name: str | None = None,
    print_fn: Callable[[str], None] = print,
    progress: bool = True,
) -> AdaptResult:
    """Fine-tune `model` (the tools' rule when None) on the labelled set `data` and write the adapted bundle to
    `out` (default ./<data name>_adapted); with `log`, an MLflow run and a registered version (alias candidate)
    of `name` (default: the registered model of `model`, else package.registered_model). `recipe`: a
    ferlab.training.finetune.Recipe (default: the measured one). Nothing is written when an input is wrong."""
    from ferlab.inference.predict import EmotionRecognizer
    from ferlab.training import engine, finetune

    # the fine-tuning runs on tf.data and TensorFlow's determinism, whatever KERAS_BACKEND says
    engine.select("tensorflow", needed_by="ferlab adapt fine-tunes on TensorFlow but")
    started = time.monotonic()
    if val is not None and val_fraction is not None:
        raise FerlabError("give either --val or --val-fraction, not both.")
    fraction = None if val is not None else (DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction)
    if fraction is not None and not 0.05 <= fraction <= 0.5:
        raise FerlabError(f"--val-fraction must be between 0.05 and 0.5, not {fraction:g}.")
    recipe = recipe or finetune.Recipe()

    files, parent_label, parent_name, parent_version = _parent(model)
    chosen = parse_emotions(emotions, files.emotions)
    data_set = labelled_set.read(data)
    images = len(data_set.items) + sum(data_set.skipped.values())
    other_labels = check_labels(data_set, chosen, "DATA", skip_unusable, print_fn)
    val_set = labelled_set.read(val) if val is not None else None
    if val_set is not None:
        images += len(val_set.items) + sum(val_set.skipped.values())
        other_labels += check_labels(val_set, chosen, "VAL", skip_unusable, print_fn)
        lacking = sorted({e for _, e in val_set.items} - {e for _, e in data_set.items}, key=chosen.index)
        if lacking:
            raise FerlabError(
                f"VAL ({val}) has faces of {', '.join(lacking)}, which DATA ({data}) lacks: the model could not learn them "
                "from your faces; add some to DATA, or leave them out of both with --emotions."
            )
    for problem in data_set.problems + (val_set.problems if val_set else []):
        print_fn(f"note: {problem}")

    print_fn(f"adapting {parent_label} to {data} ({len(data_set.items)} images; emotions {', '.join(chosen)})")
    cropper = EmotionRecognizer(None, detector, files.contract, max_pixels)
    found = read_faces(data_set, cropper, face_crop, largest_face, progress)
    check_usable(found, "DATA", skip_unusable, print_fn)
    if val_set is not None:
        held = read_faces(val_set, cropper, face_crop, largest_face, progress)
        check_usable(held, "VAL", skip_unusable, print_fn)
        shared = set(found.digests) & set(held.digests)
        if shared:
            raise FerlabError(
                f"{len(shared)} image(s) are in both DATA and VAL (the same file content); a face cannot judge a model "
                "trained on it: remove them from one."
            )
        train_faces, train_labels = found.faces, found.labels
        val_faces, val_labels = held.faces, held.labels
        split_rows = [(p, lab, g, "train") for p, lab, g in zip(found.paths, found.labels, found.groups)]
        split_rows += [(p, lab, g, "val") for p, lab, g in zip(held.paths, held.labels, held.groups)]
        digest_rows = [(d, lab, "train") for d, lab in zip(found.digests, found.labels)]
        digest_rows += [(d, lab, "val") for d, lab in zip(held.digests, held.labels)]
        how = f"VAL {val}"
    else:
        from ferlab.data.split import stratified_split

        grouped = data_set.groups is not None and any(data_set.groups)
        groups = found.groups if grouped else None
        if groups is None and len(set(found.digests)) < len(found.digests):
            groups = found.digests  # copies of one file stay on one side
        mask = stratified_split(found.labels, fraction, seed=recipe.seed, groups=groups)
        train_faces, val_faces = found.faces[~mask], found.faces[mask]
        train_labels = [lab for lab, m in zip(found.labels, mask) if not m]
        val_labels = [lab for lab, m in zip(found.labels, mask) if m]
        parts = ["val" if m else "train" for m in mask]
        split_rows = list(zip(found.paths, found.labels, found.groups, parts))
        digest_rows = [(d, lab, part) for d, lab, part in zip(found.digests, found.labels, parts)]
        how = f"a stratified {fraction:.0%} of DATA" + (" by group" if grouped else "") + f", seed {recipe.seed}"
    check_counts(_counts(train_labels), _counts(val_labels), chosen, fraction)

    y_train = np.array([chosen.index(e) for e in train_labels])
    y_val = np.array([chosen.index(e) for e in val_labels])
    report = {
        "dataset": {
            "source": data,
            "val_source": val,
            "name": data_set.name,
            "sha256": set_digest(digest_rows),
            "images": images,
            "faces": {"train": int(len(y_train)), "val": int(len(y_val))},
            "per_emotion": {e: {"train": int((y_train == i).sum()), "val": int((y_val == i).sum())} for i, e in enumerate(chosen)},
            "split": how,
            "unusable": {s: len(found.unusable[s]) + (len(held.unusable[s]) if val_set is not None else 0) for s in UNUSABLE}
            | {"other_label": other_labels},
            "face_crop": face_crop,
            "detector": "none (face crops)" if face_crop else detector,
        },
        "parent": {
            "source": files.source,
            "label": parent_label,
            "registered_model": parent_name,
            "version": parent_version,
            "sha256": _file_digest(str(files.h5)),
            "emotions": list(files.emotions),
        },
        "emotions": list(chosen),
    }
    result = _fit_and_score(files, chosen, train_faces, y_train, val_faces, y_val, recipe, report, fer2013, privatetest, print_fn)
    tuned = result.pop("model")
    contract = preprocessing() | files.contract.to_dict()
    if files.folder is not None and (files.folder / "preprocessing.json").is_file():
        from ferlab.fileio import read_json

        contract = read_json(files.folder / "preprocessing.json")

    from ferlab.contract import normalize
    from ferlab.inference.classifier import TFLiteClassifier
    from ferlab.lifecycle import adapted

    def tflite_accuracy(path: Path) -> float:
        views = TFLiteClassifier(path, emotions=chosen)
        probs = (views(normalize(val_faces)) + views(normalize(val_faces[:, :, ::-1]))) / 2
        return float(np.mean(probs.argmax(1) == y_val))

    report["minutes"] = round((time.monotonic() - started) / 60, 2)
    target = Path(out) if out else Path(f"{data_set.name}_adapted")
    bundle = adapted.write_bundle(target, tuned, report, contract, split_rows, tflite_accuracy)
    print_fn(f"wrote {bundle} (adapt.json, MODEL_CARD.md, the comparison figures)")
    outcome = AdaptResult(bundle, report)
    if log:
        from ferlab.lifecycle import tracking

        registered = name or parent_name or config.current().package.registered_model
        tracking.setup(adapted.EXPERIMENT)  # creates the project's store where there is none
        outcome.run_id, outcome.version = adapted.log_and_register(bundle, report, registered)
        report["mlflow_run_id"], report["registered"] = outcome.run_id, {"name": registered, "version": outcome.version.version}
        from ferlab.fileio import write_json

        write_json(bundle / adapted.REPORT, report)
    return outcome


def _fit_and_score(files, chosen, train_faces, y_train, val_faces, y_val, recipe, report, fer2013, privatetest, print_fn) -> dict:
    """Fine-tune, fit the temperature, score before and after; fills `report`, returns {"model": the adapted model}."""
    from ferlab.training import calibration, finetune
    from ferlab.training.compare import compare
    from ferlab.training.evaluate import mirror_views
    from ferlab.training.model_io import load_h5

    parent = load_h5(files.h5)
    ids = [files.emotions.index(e) for e in chosen]
    model = finetune.with_emotions(parent, ids)
    before_views = mirror_views(model, val_faces)
    test = private_test(fer2013, print_fn) if privatetest else None
    if test is not None:
        keep = np.isin(test[1], [EMOTIONS.index(e) for e in chosen])
        test_faces, test_labels = test[0][keep], np.array([chosen.index(EMOTIONS[i]) for i in test[1][keep]])
        test_before = mirror_views(model, test_faces).mean(0)

    epochs = recipe.epochs_for(len(y_train))
    print_fn(
        f"fine-tuning on {len(y_train)} faces (batch norm {recipe.batch_norm}, {recipe.layers} layers, {epochs} epochs, "
        f"rate {recipe.learning_rate:g}); "
        f"validating on {len(y_val)}"
    )
    tuned = finetune.fine_tune(model, train_faces, y_train, recipe, print_fn=print_fn)
    after_views = mirror_views(tuned.model, val_faces)
    temperature = calibration.fit_temperature(after_views, y_val)
    final = calibration.with_temperature(tuned.model, temperature)
    after = calibration.tempered(after_views, temperature)
    before = calibration.tempered(before_views, 1.0)
    report |= {
        "recipe": recipe.describe(),
        "epochs": tuned.epochs,
        "train_seconds": tuned.seconds,
        "history": tuned.history,
        "temperature": round(temperature, 4),
        "tta": "flip",
        "validation": compare(y_val, before, after, chosen),
        "calibration": {
            "ece_before": round(calibration.expected_calibration_error(before, y_val), 4),
            "ece_after": round(calibration.expected_calibration_error(after, y_val), 4),
            "note": "after: the temperature was fitted on these faces",
        },
    }
    if test is not None:
        print_fn(f"scoring {len(test_labels)} PrivateTest faces")
        test_after = mirror_views(final, test_faces).mean(0)
        report["privatetest"] = compare(test_labels, test_before, test_after, chosen) | {
            "source": test[2],
            "emotions": "all" if len(chosen) == len(EMOTIONS) else ",".join(chosen),
        }
    else:
        report["privatetest"] = {"skipped": "turned off (--no-privatetest)" if not privatetest else "FER2013 was not found on this machine"}
    return {"model": final}
