"""Drift: a window of the service's face log against what the model was tested on, the faces of
FER2013's PrivateTest summarised by the same code (ferlab.inference.face_summary). `ferlab monitor`
runs it; the tests run it on clean and on darkened and blurred faces.

Six features are tested, three of what the model said and three of what it was shown, each with
Evidently (https://docs.evidentlyai.com), whose test depends on the reference's size (over 1,000
faces, as PrivateTest's 3,589: the Wasserstein distance normed by the reference's standard deviation
for a number, the Jensen-Shannon distance for a category, each drifting from 0.1; a
Kolmogorov-Smirnov or chi-squared test at p < 0.05 for a smaller reference):

    probabilities    each emotion's probability (FER2013's 7, or an adapted model's own), by Evidently's
                     column test; the feature drifts when half of them or more do (Evidently's drift share)
    emotion          the shares of the predicted emotions
    top_probability  the model's confidence
    brightness       the crop's mean grey level
    sharpness        the crop's variance of the Laplacian (blur and darkening lower it)
    embedding        the penultimate layer: Evidently's model-based embedding drift, a classifier
                     trained to tell the window's embeddings from the reference's; drift from a
                     ROC AUC of 0.55 (0.5: it cannot tell them apart)

Evidently's distance thresholds are fixed, but a window of a few hundred faces lies that far from
the reference by chance (measured with pretrained:fast: a third of 300-face samples of PrivateTest
itself pass 0.1 in brightness). So each threshold is raised to the 99th percentile of the same
score for 100 reference samples of the window's size (`noise_thresholds`; for the embedding, the
99th percentile of the ROC AUC of a classifier that cannot tell them apart, `auc_noise`): a feature
drifts when it is farther from the reference than both Evidently's threshold and chance allow.

The window drifts when the share of drifted features reaches the threshold (default 0.3: two of
the six). The face size is reported, not tested: the reference's faces are FER2013's 48-pixel crops.

Evidently is an optional dependency (`pip install -c constraints.txt "ferlab[monitor]"`). Its 0.7
releases import `pandas.core.dtypes.common.infer_dtype_from_object`, which pandas 3 removed;
`import_evidently` puts an equivalent back before importing it (only Evidently's legacy column-type
test calls it, never the drift metrics used here).
"""

import hashlib
import html
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ferlab.contract import EMOTIONS, IMAGE_SIZE, TEST_SPLIT
from ferlab.errors import FerlabError
from ferlab.inference.face_summary import EMBEDDING_DIM, SUMMARY_VERSION, Penultimate, summarize

DEFAULT_THRESHOLD = 0.3  # share of the tested features that drift: 2 of 6
MIN_FACES = 50  # fewer faces make no drift test worth reading
DISTANCES = ("wasserstein", "jensenshannon")  # Evidently's tests whose threshold is a distance, not a p-value
NOISE_QUANTILE = 0.99  # a feature drifts only beyond this quantile of same-size samples of the reference
NOISE_ROUNDS = 100
PROBABILITY_SHARE = 0.5  # the probabilities feature drifts when this share of the 7 emotions' columns do
EMBEDDING_AUC = 0.55  # Evidently's default for the model-based embedding drift
INSTALL_HINT = 'pip install -c constraints.txt "ferlab[monitor]"'
EXPERIMENT = "ferlab-monitoring"
FEATURES = {
    "probabilities": "each emotion's probability (drift when half of them or more drift)",
    "emotion": "the shares of the predicted emotions",
    "top_probability": "the probability of the predicted emotion",
    "brightness": "the crop's mean grey level (0 to 255)",
    "sharpness": "the crop's variance of the Laplacian",
    "embedding": f"the penultimate layer, projected to {EMBEDDING_DIM} numbers",
}
SCALARS = ("top_probability", "brightness", "sharpness")
EMBEDDING_COLUMNS = tuple(f"embedding_{i}" for i in range(EMBEDDING_DIM))


def import_evidently():
    """The evidently package, importable on pandas 3; FerlabError saying how to install it where it is missing."""
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):  # removed in pandas 3; evidently 0.7 imports it

        def infer_dtype_from_object(dtype):
            from pandas.api.types import pandas_dtype

            return dtype if isinstance(dtype, type) and issubclass(dtype, np.generic) else pandas_dtype(dtype).type

        common.infer_dtype_from_object = infer_dtype_from_object
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import evidently
    except ImportError:
        raise FerlabError(f"ferlab monitor needs the Evidently drift library; install it with `{INSTALL_HINT}`.") from None
    return evidently


# ---- the reference --------------------------------------------------------------------------


@dataclass
class Reference:
    rows: list[dict]
    description: str  # what it was made from, for the report
    model: str  # the model that made it
    cached: Path | None = None  # where it is kept
    from_cache: bool = False


def model_fingerprint(classifier) -> str | None:
    """A digest of the classifier's weights (a TFLite file's SHA-256, a Keras model's weights); None for another kind."""
    from ferlab.fileio import sha256_of
    from ferlab.inference.classifier import KerasClassifier, TFLiteClassifier

    if isinstance(classifier, TFLiteClassifier):
        return "tflite:" + sha256_of(classifier.path)
    if isinstance(classifier, KerasClassifier):
        digest = hashlib.sha256()
        for weights in classifier.model.get_weights():
            digest.update(np.ascontiguousarray(weights).tobytes())
        return "keras:" + digest.hexdigest()
    return None


def default_cache() -> Path:
    """$FERLAB_CACHE, else $XDG_CACHE_HOME/ferlab, else ~/.cache/ferlab; references go in drift-reference/ under it."""
    if os.environ.get("FERLAB_CACHE"):
        return Path(os.environ["FERLAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ferlab"


def _default_dataset() -> Path:
    """This project's raw table, else the FER2013 source the fetch stage would find on this machine."""
    from ferlab import config
    from ferlab.data.sources import DROP_NAMES

    params = config.current()
    raw = Path(params.paths.raw_table)
    if raw.is_file():
        return raw
    drop = Path(params.fetch.drop_folder)
    for candidate in [drop / name for name in DROP_NAMES] + [Path(c) for c in params.fetch.candidates]:
        if candidate.exists():
            return candidate
    raise FerlabError(
        "no FER2013 to build the drift reference from (no data/raw table, nothing in data/external/); "
        "pass --reference with the Kaggle archive.zip, its extracted folder or fer2013.csv."
    )


def privatetest_images(dataset: Path) -> np.ndarray:
    """The (3589, 48, 48) uint8 PrivateTest faces of a raw table (.parquet) or a FER2013 source (zip, folder, csv)."""
    from ferlab.data import sources
    from ferlab.data.table import images_of, read_table

    table = read_table(dataset) if dataset.suffix == ".parquet" else sources.read(sources.classify(dataset)).table
    test = table[table["split"] == TEST_SPLIT]
    if not len(test):
        raise FerlabError(f"{dataset} holds no {TEST_SPLIT} faces; pass --reference with the full FER2013 (archive.zip or fer2013.csv).")
    return images_of(test)


def reference_summaries(recognizer, images: np.ndarray, chunk: int = 512) -> list[dict]:
    """The summaries of face crops (FER2013's) classified by the recognizer: the path the service's faces take."""
    embedder = Penultimate.of(recognizer.classifier)
    emotions = tuple(getattr(recognizer, "emotions", EMOTIONS))
    box = (0, 0, IMAGE_SIZE, IMAGE_SIZE)
    rows = []
    for start in range(0, len(images), chunk):
        crops = images[start : start + chunk]
        rows += summarize([box] * len(crops), crops, recognizer.classify(crops), recognizer.model_source, embedder, emotions=emotions)
    return rows


def load_reference(recognizer, source: str | None = None, cache: Path | None = None, say=print) -> Reference:
    """The reference for the recognizer's model: a face log file (.jsonl) as given, else PrivateTest
    of `source` (a raw table, archive.zip, folder or fer2013.csv; default: this project's), summarised
    once per model and dataset and then read from the cache."""
    from ferlab.fileio import atomic_path
    from ferlab.serve.face_log import read_window

    if source and re.search(r"\.jsonl(\.\d+)?$", source):  # a face log (or a rotated one) as it is
        window = read_window(source)
        if window.corrupt:
            say(f"warning: {window.corrupt} of {window.lines} lines of the reference {source} are not face summaries; skipped")
        return Reference(window.rows, f"{source} ({len(window.rows)} faces)", next(iter(window.models), "?"))
    dataset = Path(source) if source else _default_dataset()
    if not dataset.exists():
        raise FerlabError(f"no FER2013 at {dataset}; pass --reference with archive.zip, its extracted folder or fer2013.csv.")
    description = f"{TEST_SPLIT} of {dataset}"
    fingerprint = model_fingerprint(recognizer.classifier)
    stat = dataset.stat()
    key = json.dumps([fingerprint, recognizer.tta, SUMMARY_VERSION, str(dataset.resolve()), stat.st_size, stat.st_mtime_ns])
    path = (cache or default_cache()) / "drift-reference" / f"privatetest-{hashlib.sha256(key.encode()).hexdigest()[:20]}.jsonl"
    if fingerprint and path.is_file():
        return Reference(read_window(path).rows, description, recognizer.model_source, path, from_cache=True)
    images = privatetest_images(dataset)
    say(f"summarising the reference: {len(images)} {TEST_SPLIT} faces through {recognizer.model_source} (once for this model)")
    rows = reference_summaries(recognizer, images)
    if fingerprint:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
        except OSError as err:
            say(f"warning: the reference could not be cached in {path.parent} ({err.strerror}); pass --cache DIR")
            path = None
    return Reference(rows, description, recognizer.model_source, path if fingerprint else None)


# ---- the comparison -------------------------------------------------------------------------


def emotions_of(rows: list[dict], what: str) -> tuple[str, ...]:
    """The emotions the faces were classified into (the keys of their probabilities), the same for all."""
    found = {tuple(r["probabilities"]) for r in rows}
    if len(found) != 1:
        raise FerlabError(f"the faces of the {what} were classified into different sets of emotions ({len(found)}); compare one model's.")
    return found.pop()


def frame(rows: list[dict], emotions: tuple[str, ...] = EMOTIONS):
    """Summaries -> a DataFrame: p_<emotion> for each of `emotions`, top_probability, brightness,
    sharpness, emotion, face_size and embedding_<i> (NaN where a face has no embedding)."""
    import pandas as pd

    data = {f"p_{e}": [float(r["probabilities"].get(e, np.nan)) for r in rows] for e in emotions}
    for name in ("top_probability", "brightness", "sharpness", "face_size"):
        data[name] = [float(r.get(name, np.nan)) if r.get(name) is not None else np.nan for r in rows]
    data["emotion"] = [str(r.get("emotion")) for r in rows]
    embeddings = np.full((len(rows), EMBEDDING_DIM), np.nan)
    for i, r in enumerate(rows):
        e = r.get("embedding")
        if isinstance(e, list) and len(e) == EMBEDDING_DIM:
            embeddings[i] = e
    data |= {name: embeddings[:, i] for i, name in enumerate(EMBEDDING_COLUMNS)}
    return pd.DataFrame(data)


def _describe(values) -> dict:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return {}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"mean": round(float(values.mean()), 4), "median": round(float(median), 4), "q1": round(float(q1), 4), "q3": round(float(q3), 4)}


def _shares(values, emotions: tuple[str, ...]) -> dict:
    return {e: round(float(np.mean(np.asarray(values) == e)), 4) for e in emotions}


def noise_thresholds(current, reference, columns: list[str], rounds: int = NOISE_ROUNDS) -> dict[str, dict]:
    """Per column: the test Evidently picks and the threshold it is run with. A distance (Wasserstein,
    Jensen-Shannon) has a fixed threshold (0.1) whatever the window's size, but a small window of the
    reference itself lies that far from it by chance (measured: a third of 300-face PrivateTest samples
    pass 0.1 in brightness); so the threshold is the larger of Evidently's and the NOISE_QUANTILE of
    the distances of `rounds` reference samples of the window's size. p-value tests need no such floor."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    chosen = {}
    for c in columns:
        kind = ColumnType.Categorical if c == "emotion" else ColumnType.Numerical
        test = get_stattest(reference[c], current[c], kind, None)
        entry = {"method": test.display_name, "default": test.default_threshold, "noise": None, "threshold": test.default_threshold}
        if test.name in DISTANCES:
            scores = [test(reference[c], reference[c].sample(len(current), random_state=r), kind, None).drift_score for r in range(rounds)]
            entry["noise"] = round(float(np.quantile(scores, NOISE_QUANTILE)), 4)
            entry["threshold"] = max(test.default_threshold, entry["noise"])
        chosen[c] = entry
    return chosen


def auc_noise(window: int, reference: int) -> float:
    """The NOISE_QUANTILE of the ROC AUC of a classifier that cannot tell the two apart, on the half of
    the faces that Evidently's model-based embedding drift holds out (Mann-Whitney, normal approximation)."""
    from statistics import NormalDist

    n1, n2 = max(window // 2, 1), max(reference // 2, 1)
    return 0.5 + NormalDist().inv_cdf(NOISE_QUANTILE) * ((n1 + n2 + 1) / (12 * n1 * n2)) ** 0.5


def compare(window_rows: list[dict], reference_rows: list[dict], threshold: float = DEFAULT_THRESHOLD):
    """(the verdicts as a dict, Evidently's snapshot of the column tests) for a window against the reference."""
    if len(window_rows) < MIN_FACES:
        raise FerlabError(
            f"the window holds {len(window_rows)} faces; a drift test needs at least {MIN_FACES}: "
            "widen it (--since, --last) or wait for more."
        )
    if len(reference_rows) < MIN_FACES:
        raise FerlabError(f"the reference holds {len(reference_rows)} faces; it needs at least {MIN_FACES}.")
    emotions = emotions_of(window_rows, "window")
    if set(emotions_of(reference_rows, "reference")) != set(emotions):
        raise FerlabError(
            f"the window's faces were classified into {', '.join(emotions)}, the reference's into "
            f"{', '.join(emotions_of(reference_rows, 'reference'))}: the reference comes from another model; "
            "pass --model with the one the service ran."
        )
    import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    current, reference = frame(window_rows, emotions), frame(reference_rows, emotions)
    numeric = [*(f"p_{e}" for e in emotions), *SCALARS]
    columns = [*numeric, "emotion"]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=["emotion"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tests = noise_thresholds(current, reference, columns)
        snapshot = Report([ValueDrift(column=c, threshold=tests[c]["threshold"]) for c in columns], include_tests=True).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )
    data = snapshot.dict()
    scores = {m["config"]["column"]: m for m in data["metrics"]}
    failed = {t["metric_config"]["params"]["column"]: str(getattr(t["status"], "value", t["status"])) == "FAIL" for t in data["tests"]}

    def column(name: str) -> dict:
        m = scores[name]
        return {
            "method": m["config"]["method"],
            "score": round(float(m["value"]), 4),
            "threshold": round(float(m["config"]["threshold"]), 4),
            "evidently_threshold": tests[name]["default"],
            "noise": tests[name]["noise"],
            "drift": failed[name],
        }

    features = {}
    per_emotion = {e: column(f"p_{e}") | {"window": _describe(current[f"p_{e}"])} for e in emotions}
    drifted = sum(c["drift"] for c in per_emotion.values())
    features["probabilities"] = {
        "method": f"share of the {len(emotions)} probabilities that drift (each: {per_emotion[emotions[0]]['method']})",
        "score": round(drifted / len(emotions), 4),
        "threshold": PROBABILITY_SHARE,
        "drift": drifted / len(emotions) >= PROBABILITY_SHARE,
        "emotions": per_emotion,
    }
    features["emotion"] = column("emotion") | {
        "window": _shares(current["emotion"], emotions),
        "reference": _shares(reference["emotion"], emotions),
    }
    for name in ("top_probability", "brightness", "sharpness"):
        features[name] = column(name) | {"window": _describe(current[name]), "reference": _describe(reference[name])}
    have = current[list(EMBEDDING_COLUMNS)].notna().all(axis=1)
    have_ref = reference[list(EMBEDDING_COLUMNS)].notna().all(axis=1)
    if have.sum() >= MIN_FACES and have_ref.sum() >= MIN_FACES:
        noise = auc_noise(int(have.sum()), int(have_ref.sum()))
        score, drift, _ = ModelDriftMethod(threshold=max(EMBEDDING_AUC, noise))(
            current.loc[have, list(EMBEDDING_COLUMNS)].reset_index(drop=True),
            reference.loc[have_ref, list(EMBEDDING_COLUMNS)].reset_index(drop=True),
        )
        features["embedding"] = {
            "method": "Evidently's model-based embedding drift (ROC AUC of a classifier telling window from reference)",
            "score": round(float(score), 4),
            "threshold": round(max(EMBEDDING_AUC, noise), 4),
            "evidently_threshold": EMBEDDING_AUC,
            "noise": round(noise, 4),
            "drift": bool(drift),
            "faces": int(have.sum()),
        }
    else:
        features["embedding"] = {
            "method": "not tested",
            "drift": None,
            "why": f"fewer than {MIN_FACES} faces with an embedding (window {int(have.sum())}, reference {int(have_ref.sum())})",
        }
    tested = [name for name, f in features.items() if f["drift"] is not None]
    drifted_features = [name for name in tested if features[name]["drift"]]
    share = len(drifted_features) / len(tested)
    result = {
        "drift": share >= threshold,
        "share": round(share, 4),
        "threshold": threshold,
        "drifted": drifted_features,
        "tested": tested,
        "features": features,
        "informational": {
            "face_size": {
                "window": _describe(current["face_size"]),
                "why": "not tested: the reference's faces are FER2013's 48-pixel crops",
            }
        },
        "faces": {"window": len(window_rows), "reference": len(reference_rows)},
    }
    return result, snapshot


# ---- the report -----------------------------------------------------------------------------


def verdict_line(result: dict) -> str:
    """One sentence: the overall verdict and the features that drifted."""
    drifted = ", ".join(result["drifted"]) or "none"
    word = "DRIFT" if result["drift"] else "no drift"
    return (
        f"{word}: {len(result['drifted'])} of {len(result['tested'])} features drifted ({drifted}); "
        f"share {result['share']:.2f} against the threshold {result['threshold']:.2f}, "
        f"{result['faces']['window']} faces against {result['faces']['reference']}"
    )


def _html(result: dict, columns_file: str) -> str:
    rows = []
    for name, f in result["features"].items():
        state = "not tested" if f["drift"] is None else ("drift" if f["drift"] else "no drift")
        score = "" if f.get("score") is None else f"{f['score']:.4g}"
        threshold = "" if f.get("threshold") is None else f"{f['threshold']:.4g}"
        rows.append(
            f"<tr class='{state.replace(' ', '-')}'><td>{name}</td><td>{html.escape(FEATURES[name])}</td>"
            f"<td>{html.escape(f.get('method', ''))}</td><td>{score}</td><td>{threshold}</td><td>{state}</td></tr>"
        )
    for name, e in result["features"]["probabilities"]["emotions"].items():
        rows.append(
            f"<tr class='detail'><td>&nbsp;&nbsp;p({name})</td><td></td><td>{html.escape(e['method'])}</td>"
            f"<td>{e['score']:.4g}</td><td>{e['threshold']:.4g}</td><td>{'drift' if e['drift'] else 'no drift'}</td></tr>"
        )
    size = result["informational"]["face_size"]
    meta = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in {
            "window": result.get("window", {}).get("description", ""),
            "model (window)": ", ".join(result.get("window", {}).get("models", [])),
            "reference": result.get("reference", {}).get("description", ""),
            "model (reference)": result.get("reference", {}).get("model", ""),
            "face size (window)": f"median {size['window'].get('median', '-')} px, quartiles {size['window'].get('q1', '-')} to "
            f"{size['window'].get('q3', '-')} ({size['why']})",
            "made": result.get("created", ""),
        }.items()
    )
    colour = "#b00020" if result["drift"] else "#1b5e20"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ferlab drift report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}} td,th{{padding:.3em .6em;text-align:left;vertical-align:top}}
table{{border-collapse:collapse}} tr{{border-bottom:1px solid #ddd}} .drift td:last-child{{color:#b00020;font-weight:bold}}
.detail{{color:#555;font-size:.9em}} h1{{color:{colour}}}</style></head><body>
<h1>{html.escape(verdict_line(result))}</h1>
<table><tr><th>feature</th><th>what</th><th>test</th><th>score</th><th>threshold</th><th>verdict</th></tr>{"".join(rows)}</table>
<h2>Window and reference</h2><table>{meta}</table>
<p>Each column's distributions, window against reference: <a href="{columns_file}">{columns_file}</a> (Evidently).</p>
</body></html>
"""


def write_report(result: dict, snapshot, out: Path) -> dict[str, Path]:
    """drift.json (the verdicts), drift.html (the same, readable) and columns.html (Evidently's column report) in `out`."""
    from ferlab.fileio import atomic_path, write_json

    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "drift.json", "html": out / "drift.html", "columns": out / "columns.html"}
    write_json(files["json"], result)
    with atomic_path(files["html"]) as tmp:
        tmp.write_text(_html(result, files["columns"].name))
    with atomic_path(files["columns"]) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot.save_html(str(tmp))
    return files


def log_run(result: dict, files: dict[str, Path]) -> str:
    """One MLflow run in the ferlab-monitoring experiment: the verdicts as metrics, the report as artifacts."""
    from ferlab.lifecycle import tracking

    tracker = tracking.RunTracker(EXPERIMENT, tags={"ferlab.model_source": str(result["reference"]["model"])})
    run_id = tracker.start()
    try:
        tracker.log_params(
            {
                "window": result["window"]["description"],
                "window_models": ", ".join(result["window"]["models"]),
                "reference": result["reference"]["description"],
                "threshold": result["threshold"],
            }
        )
        metrics = {"drift": int(result["drift"]), "drift_share": result["share"], "faces": result["faces"]["window"]}
        for name, f in result["features"].items():
            if f["drift"] is not None:
                metrics |= {f"score_{name}": f["score"], f"drift_{name}": int(f["drift"])}
        tracker.log_metrics(metrics)
        for path in files.values():
            tracker.log_artifact(path, "drift")
    finally:
        tracker.end()
    return run_id


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def say_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
