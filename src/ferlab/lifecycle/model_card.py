"""The model card (Markdown) shipped in the bundle."""

from ferlab.contract import EMOTIONS, SPLITS


def _metrics_table(scores: dict) -> str:
    rows = ["| emotion | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for e in EMOTIONS:
        c = scores["per_class"][e]
        rows.append(f"| {e} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1-score']:.3f} | {int(c['support'])} |")
    return "\n".join(rows)


def _confusion_table(matrix) -> str:
    rows = ["| true \\ predicted | " + " | ".join(EMOTIONS) + " |", "|---|" + "---:|" * len(EMOTIONS)]
    rows += [f"| {e} | " + " | ".join(str(v) for v in row) + " |" for e, row in zip(EMOTIONS, matrix)]
    return "\n".join(rows)


def _tta_line(kind: str, note: str, scores: dict | None) -> str:
    if not scores:
        return ""
    return (
        f"With {kind} test-time augmentation ({note}reported separately): "
        f"accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}."
    )


def _calibration_line(calibrated: dict) -> str:
    flip, one = calibrated["test_ece"]["flip"], calibrated["test_ece"]["none"]
    if calibrated["method"] != "temperature":
        return (
            f"Probabilities are not calibrated: expected calibration error {flip['before']:.4f} with flip "
            f"test-time augmentation, {one['before']:.4f} without ({calibrated['bins']} bins)."
        )
    return (
        f"Probabilities are calibrated by a softmax temperature of {calibrated['temperature']:.3f} fitted on PublicTest "
        f"(in the weights of every format): expected calibration error with flip test-time augmentation "
        f"{flip['before']:.4f} before, **{flip['after']:.4f}** after; without it {one['before']:.4f} before, "
        f"{one['after']:.4f} after ({calibrated['bins']} bins)."
    )


def kept_weights(run: dict) -> str:
    """Which epochs' weights the model holds, as run.json of the train stage says."""
    averaged, last = run.get("averaged_epochs") or 0, run["epochs_run"]
    if averaged:
        return (
            f"the average of epochs {last - averaged + 1}-{last} of {last}, kept over best epoch {run['best_epoch']} by PublicTest accuracy"
        )
    return f"best epoch {run['best_epoch']} of {last}"


def render(
    name: str,
    architecture: str,
    parameters: int,
    scores: dict,
    fetch_summary: dict,
    validation: dict,
    export: dict,
    run: dict,
    calibrated: dict,
) -> str:
    test, f = scores["test"], validation["findings"]
    counts = {s: sum(fetch_summary["counts"][s].values()) for s in SPLITS}
    tta = scores.get("test_tta_flip")
    ten = scores.get("test_tta_ten_crop")
    warped = scores.get("test_tta_scale_rotate")
    return f"""# Model card: {name}

## Model
- Architecture: `{architecture}`, {parameters:,} parameters, Keras (`model.h5`, HDF5) and TensorFlow Lite ({export["quantization"]}).
- Input: one 48x48 grayscale face, grey levels / 255; faces found by a detector are grown by the
  margin in `preprocessing.json` and, with `align`, turned so the eyes are level (where the detector
  finds them) before cropping. Output: a probability for each of
  {", ".join(EMOTIONS)}.
- Trained in MLflow run `{run["run_id"]}` ({kept_weights(run)}, {run["precision"]}).

## Data
FER2013 (Goodfellow et al., 2013): {sum(counts.values()):,} web-sourced 48x48 grey faces labelled with 7 emotions;
Training {counts["Training"]:,} (fit), PublicTest {counts["PublicTest"]:,} (model selection), PrivateTest {counts["PrivateTest"]:,}
(the numbers below; never used for selection). Data checksum `{fetch_summary["table_sha256"][:16]}...`.

Known issues, measured by the validation stage: {sum(f["near_blank"].values())} near-blank frames;
exact duplicate images within splits ({", ".join(f"{s} {d['images']}" for s, d in f["duplicates_within_split"].items())});
test images that also appear in Training ({", ".join(f"{k} {v}" for k, v in f["duplicates_across_splits"].items())});
class imbalance (disgust is {f["class_share"]["Training"]["disgust"]:.1%} of Training). FER2013 labels are noisy
(human accuracy on it is estimated at about 65%).

## Results on PrivateTest ({test["n"]:,} faces)
Accuracy **{test["accuracy"]:.4f}**, macro-F1 {test["macro_f1"]:.4f}, weighted-F1 {test["weighted_f1"]:.4f}.
{_tta_line("horizontal-flip", "what ferlab's tools apply by default; ", tta)}
{_tta_line("ten-crop", "", ten)}
{_tta_line("scale-rotate", "", warped)}
{_calibration_line(calibrated)}
TensorFlow Lite export: accuracy {export["tflite_accuracy"]:.4f} (the `.h5`: {export["h5_accuracy"]:.4f}).

{_metrics_table(test)}

Confusion matrix (counts):

{_confusion_table(test["confusion_matrix"])}

## Intended use and limits
- For research, teaching and aggregate, consented uses (e.g. how an audience reacts overall, with its consent).
- **Not for decisions about people**: hiring, policing, security, health, education or credit. A facial
  expression is not a reliable readout of what a person feels, and this model errs on about a third of faces.
- FER2013 faces are mostly frontal, web-sourced and skewed in age and ethnicity; expect lower accuracy on
  profiles, occlusions, low light, children, older people and under-represented groups. Disgust and fear are
  recognised worst (see the table).
"""


def render_shipped(card: dict) -> str:
    """The MODEL_CARD.md of a pretrained model shipped in the package, from its card.json."""
    test, training, formats = card["privatetest"], card["training"], card["formats"]
    keras = (
        "\n- The float32 Keras model (`model.h5`) ships beside it: `--runtime keras`, Grad-CAM heat maps, `ferlab adapt`."
        if card.get("keras_h5")
        else ""
    )
    rows = ["| emotion | precision | recall | F1 |", "|---|---:|---:|---:|"]
    rows += [f"| {e} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} |" for e, c in test["flip"]["per_class"].items()]
    modes = "\n".join(
        f"| {label} | {test[m]['accuracy']:.4f} | {test[m]['macro_f1']:.4f} | {test[m]['ece']:.4f} |"
        for m, label in (("none", "one view"), ("flip", "flip (the tools' default)"), ("ten_crop", "ten-crop"))
    )
    return f"""# Model card: pretrained:{card["name"]} ({card["version"]})

## Model
- Architecture `{card["architecture"]}`, {card["parameters"]:,} parameters, TensorFlow Lite ({card["format"]}); runs on
  LiteRT without TensorFlow. Probabilities are calibrated (a softmax temperature fitted on PublicTest is in the weights).{keras}
- Input: one 48x48 grayscale face, grey levels / 255, cropped as `preprocessing.json` says. Output: a probability for each of
  {", ".join(card["emotions"])}.

## Results on PrivateTest ({test["faces"]:,} faces, never used for selection), this file as shipped

| prediction | accuracy | macro-F1 | calibration error (ECE) |
|---|---:|---:|---:|
{modes}

Per emotion, with flip (as the tools predict):

{chr(10).join(rows)}

Format: the float32 model scored {formats["float32"]["none"]:.4f} one view and {formats["float32"]["flip"]:.4f} with flip;
int8 {formats["int8"]["none"]:.4f} / {formats["int8"]["flip"]:.4f} ({formats["int8"]["bytes"]:,} bytes), float16
{formats["float16"]["none"]:.4f} / {formats["float16"]["flip"]:.4f} ({formats["float16"]["bytes"]:,} bytes); rule: {formats["rule"]}.

## Training
- Command: `{training["command"]}` (params below), code at git commit `{training["git_commit"]}`.
- Hardware: {training["hardware"]}; precision {training["precision"]}; kept {training["kept"]}.
- MLflow run `{training["mlflow_run_id"]}`. Data: {card["data"]["dataset"]}, table checksum `{card["data"]["table_sha256"]}`.

{chr(10).join(f"- `{k}`: {v}" for k, v in training["params"].items())}

## Intended use and limits
- For research, teaching and aggregate, consented uses. **Not for decisions about people** (hiring, policing, security,
  health, education, credit): a facial expression is not a reliable readout of what a person feels.
- FER2013 faces are mostly frontal, web-sourced and skewed in age and ethnicity; expect lower accuracy on profiles,
  occlusions, low light, children, older people and under-represented groups.
"""
