"""The model on the user's own labelled faces: score a LabelledSet, write the report, log it to MLflow.

Each image is found to hold one face (scored), none, several (counted, not scored unless
`largest_face`), or cannot be read (one sentence, counted); nothing is dropped silently.
Classes absent from the set are left out of the macro averages, and the summary says so.
"""

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.contract import EMOTIONS, IMAGE_SIZE
from ferlab.errors import FerlabError
from ferlab.fileio import write_json
from ferlab.inference.labelled_set import LabelledSet

EXPERIMENT = "ferlab-evaluations"
NOT_SCORED = ("no_face", "several_faces", "unreadable")


@dataclass
class Outcome:
    path: str
    label: str
    status: str  # scored | no_face | several_faces | unreadable
    message: str = ""
    face: np.ndarray | None = None  # the 48x48 model input that was scored
    probabilities: np.ndarray | None = None
    emotions: tuple[str, ...] = EMOTIONS  # the model's outputs, in order

    @property
    def predicted(self) -> str | None:
        return None if self.probabilities is None else self.emotions[int(np.argmax(self.probabilities))]


def _face_of(path: str, label: str, detections, faces, largest_face: bool) -> Outcome:
    if len(faces) == 0:
        return Outcome(path, label, "no_face", f"{path}: no face found.")
    if len(faces) > 1 and not largest_face:
        return Outcome(path, label, "several_faces", f"{path}: {len(faces)} faces found; pass --largest-face to score the largest.")
    largest = max(range(len(faces)), key=lambda i: detections[i].box[2] * detections[i].box[3])
    return Outcome(path, label, "scored", face=faces[largest])


def score(recognizer, labelled: LabelledSet, face_crop: bool = False, largest_face: bool = False, progress: bool = True) -> list[Outcome]:
    """One Outcome per image of `labelled`, in its order; faces are classified CHUNK images at a time
    (ferlab.inference.predict.classify_in_chunks)."""
    from tqdm import tqdm

    from ferlab.inference.predict import classify_in_chunks

    def crop(item: tuple[str, str]) -> tuple[Outcome, np.ndarray]:
        outcome = _face_of(*item, *recognizer.crops(item[0], face_crop=face_crop), largest_face)
        return outcome, (outcome.face[np.newaxis] if outcome.status == "scored" else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8))

    outcomes: list[Outcome] = []
    with tqdm(total=len(labelled.items), unit="image", disable=not progress or None, file=sys.stderr) as bar:
        chunks = classify_in_chunks(recognizer.classify, labelled.items, crop, on_read=lambda: bar.update(1))
        for (path, label), found, probabilities in chunks:
            if probabilities is None:  # found is the error that made the image unreadable
                outcomes.append(Outcome(path, label, "unreadable", str(found)))
                continue
            if len(probabilities):
                found.probabilities = np.asarray(probabilities[0], dtype=np.float64)
                found.emotions = tuple(getattr(recognizer, "emotions", EMOTIONS))
            outcomes.append(found)
    return outcomes


def summarise(outcomes: list[Outcome], labelled: LabelledSet, setup: dict) -> dict:
    """Accuracy, macro-F1 over the classes present, per-class scores and the confusion matrix
    (ferlab.training.evaluate.scores, the evaluator's figures)."""
    from ferlab.training.evaluate import scores

    scored = [o for o in outcomes if o.status == "scored"]
    if not scored:
        raise FerlabError(
            f"no image of {labelled.source} could be scored "
            f"({', '.join(f'{n} {s}' for s, n in _counts(outcomes).items() if n)}); see the messages above."
        )
    emotions = scored[0].emotions
    y_true = np.array([emotions.index(o.label) for o in scored])
    y_pred = np.array([int(np.argmax(o.probabilities)) for o in scored])
    present = sorted(set(y_true.tolist()))
    figures = scores(y_true, y_pred, macro_labels=present, emotions=emotions)
    return {
        "dataset": labelled.source,
        "images": len(outcomes),
        "scored": len(scored),
        "not_scored": _counts(outcomes),
        "skipped_labels": labelled.skipped,
        "problems": labelled.problems,
        "accuracy": round(figures["accuracy"], 4),
        "macro_f1": round(figures["macro_f1"], 4),
        "emotions": list(emotions),
        "classes_in_macro": [emotions[i] for i in present],
        "absent_classes": [e for i, e in enumerate(emotions) if i not in present],
        "per_class": {
            e: (
                {
                    "precision": round(float(c["precision"]), 4),
                    "recall": round(float(c["recall"]), 4),
                    "f1": round(float(c["f1-score"]), 4),
                    "support": int(c["support"]),
                }
                if i in present
                else None
            )
            for i, (e, c) in enumerate(figures["per_class"].items())
        },
        "confusion_matrix": figures["confusion_matrix"],
        "setup": setup,
    }


def _counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {status: sum(o.status == status for o in outcomes) for status in NOT_SCORED}


def write_report(summary: dict, outcomes: list[Outcome], out_dir: str | Path, mistakes: int = 32) -> dict[str, Path]:
    """summary.json, predictions.csv, confusion_matrix.json/.png and mistakes.png (the most confident wrong answers)."""
    from ferlab import plots

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FerlabError(f"cannot create {out} ({err.strerror}); choose another --out.") from None
    files = {name: out / name for name in ("summary.json", "predictions.csv", "confusion_matrix.json", "confusion_matrix.png")}
    emotions = summary.get("emotions", list(EMOTIONS))  # the model's outputs (a model adapted to fewer emotions: its own)
    write_json(files["summary.json"], summary)
    write_json(
        files["confusion_matrix.json"],
        {"labels": emotions, "rows": "true", "columns": "predicted", "matrix": summary["confusion_matrix"]},
    )
    with open(files["predictions.csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "status", "predicted", "confidence", *[f"p_{e}" for e in emotions], "message"])
        for o in outcomes:
            probs = [] if o.probabilities is None else [f"{p:.4f}" for p in o.probabilities]
            writer.writerow(
                [
                    o.path,
                    o.label,
                    o.status,
                    o.predicted or "",
                    f"{max(o.probabilities):.4f}" if probs else "",
                    *(probs or [""] * len(emotions)),
                    o.message,
                ]
            )
    plots.confusion(
        summary["confusion_matrix"],
        files["confusion_matrix.png"],
        f"{Path(summary['dataset']).name}: accuracy {summary['accuracy']:.3f}, macro-F1 {summary['macro_f1']:.3f}",
        emotions,
    )
    wrong = sorted((o for o in outcomes if o.status == "scored" and o.predicted != o.label), key=lambda o: -float(np.max(o.probabilities)))[
        :mistakes
    ]
    if wrong:
        files["mistakes.png"] = out / "mistakes.png"
        plots.labelled_faces(
            [o.face for o in wrong],
            [o.label for o in wrong],
            [f"{o.predicted} {np.max(o.probabilities):.0%}" for o in wrong],
            files["mistakes.png"],
            title="The most confident mistakes: true -> predicted (confidence)",
        )
    return files


def registered_version(model_source: str):
    """(name, VersionInfo) when the model scored is a registered one (models:/name@alias), else None."""
    from ferlab.lifecycle import registry

    if not registry.is_uri(model_source):
        return None
    name, alias = registry.parse_uri(model_source)
    version = registry.by_alias(name, alias)
    return (name, version) if version is not None else None


def log_run(summary: dict, files: dict[str, Path], labelled: LabelledSet, model_source: str) -> str:
    """One MLflow run in the `ferlab-evaluations` experiment: the set as a dataset input, the
    scores as metrics, the report as artifacts, tagged with the registered version scored
    (which is tagged back with the result), so versions compare on the same data in the UI."""
    import mlflow
    import pandas as pd

    from ferlab.lifecycle import tracking

    tracker = tracking.RunTracker(EXPERIMENT, tags={"ferlab.model_source": str(model_source), "ferlab.dataset": labelled.name})
    run_id = tracker.start()
    try:
        found = registered_version(model_source)
        if found:
            tracker.set_tags({"ferlab.registered_model": found[0], "ferlab.registered_version": found[1].version})
        table = pd.DataFrame(labelled.items, columns=["path", "label"])
        tracker.log_dataset(mlflow.data.from_pandas(table, source=str(Path(labelled.source).resolve()), name=labelled.name), "evaluation")
        tracker.log_params({"dataset": labelled.source, "images": summary["images"], **summary["setup"]})
        metrics = {"accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"], "scored": summary["scored"]}
        metrics |= {f"not_scored_{k}": v for k, v in summary["not_scored"].items()}
        for emotion, cls in summary["per_class"].items():
            if cls:
                metrics |= {f"f1_{emotion}": cls["f1"], f"recall_{emotion}": cls["recall"]}
        tracker.log_metrics(metrics)
        for path in files.values():
            tracker.log_artifact(path, "evaluation")
    finally:
        tracker.end()
    if found:
        from ferlab.lifecycle import registry

        registry.tag_version(
            found[0],
            found[1].version,
            f"eval.{labelled.name}",
            f"accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f} on {summary['scored']} faces (run {run_id})",
        )
    return run_id
