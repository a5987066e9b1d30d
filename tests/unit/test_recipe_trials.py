"""benchmarks/recipe_trials.py merges this machine's MLflow runs into the committed table of trials
without dropping the rows that other machines (or a hand) added."""

import importlib.util
from types import SimpleNamespace

from conftest import REPO

spec = importlib.util.spec_from_file_location("recipe_trials", REPO / "benchmarks/recipe_trials.py")
recipe_trials = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe_trials)

OLD = """| run | seed | epochs run (best) | PublicTest | PrivateTest | flip | ten-crop | macro-F1 | lowest recall | note |
|---|---|---|---|---|---|---|---|---|---|
| elsewhere | 43 | 45 (44) | 65.28 | 66.79 | 68.18 | 68.24 | 0.652 | fear 0.44 | another machine |
| here | 42 | 3 |  |  |  |  |  |  | killed |
"""


def fake_run(name, params, metrics, tags=None):
    return SimpleNamespace(
        info=SimpleNamespace(run_name=name, run_id="0123456789abcdef", status="FINISHED"),
        data=SimpleNamespace(params=params, metrics=metrics, tags=tags or {}),
    )


def test_a_run_row_names_its_params_and_scores():
    metrics = {"best_epoch": 40, "best_val_accuracy": 0.6545, "eval/test_accuracy": 0.6721, "eval/test_macro_f1": 0.6661}
    metrics |= {"eval/test_tta_ten_crop_accuracy": 0.693, "eval/test_tta_scale_rotate_accuracy": 0.6846}
    metrics |= {f"eval/test_recall_{e}": 0.7 for e in recipe_trials.EMOTIONS} | {"eval/test_recall_fear": 0.439}
    params = {"seed": "42", "train.class_weights": "True", "preprocess.class_weights": "sqrt"}
    row = recipe_trials.run_row(fake_run("v8", params, metrics), ["seed", "train.class_weights", "preprocess.class_weights"], 45)
    assert row["run"] == "v8" and row["seed"] == "42"
    assert row["weighted loss"] == "True" and row["class_weights"] == "sqrt"
    assert row["epochs run (best)"] == "45 (40)" and row["PublicTest"] == "65.45" and row["PrivateTest"] == "67.21"
    assert row["ten-crop"] == "69.30" and row["scale-rotate"] == "68.46"
    assert row["flip"] == "" and row["macro-F1"] == "0.666" and row["lowest recall"] == "fear 0.44" and row["note"] == ""


def test_an_interrupted_run_says_so():
    row = recipe_trials.run_row(fake_run("cut", {}, {}), [], 3)
    assert row["epochs run (best)"] == "3" and row["note"] == "finished, no evaluation"


def test_a_run_resumed_with_other_epochs_shows_the_epochs_it_went_on_with():
    run = fake_run("swa", {"train.epochs": "120"}, {}, tags={"resumed_with.train.epochs": "100"})
    assert recipe_trials.run_row(run, ["train.epochs"], 100)["epochs"] == "100"


def test_merge_keeps_other_machines_rows_and_takes_new_ones():
    here = {"run": "here", "seed": "", "weight_decay": "0.005", "epochs run (best)": "45 (45)", "PublicTest": "65.45", "note": ""}
    new = {"run": "new", "seed": "44", "weight_decay": "0.0005", "epochs run (best)": "2", "note": "running"}
    header, rows = recipe_trials.read_table(recipe_trials.merge(OLD, [here, new], ["seed", "train.weight_decay"]))
    assert header == ["run", "seed", "weight_decay", *recipe_trials.RESULTS]
    assert [r["run"] for r in rows] == ["elsewhere", "here", "new"]
    assert rows[0]["PrivateTest"] == "66.79" and rows[0]["note"] == "another machine" and rows[0]["weight_decay"] == ""
    assert rows[0]["ten-crop"] == "68.24" and rows[0]["scale-rotate"] == "", "a column the old table lacks: empty"
    assert rows[1]["PublicTest"] == "65.45" and rows[1]["epochs run (best)"] == "45 (45)"
    assert rows[1]["seed"] == "42" and rows[1]["note"] == "killed", "a cell empty in the new row keeps the old one"
    assert rows[2]["weight_decay"] == "0.0005" and rows[2]["note"] == "running"


def test_replace_writes_this_databases_runs_only():
    header, rows = recipe_trials.read_table(recipe_trials.merge("", [{"run": "a", "seed": "1"}], ["seed"]))
    assert header[:2] == ["run", "seed"] and [r["run"] for r in rows] == ["a"]


def test_the_committed_table_survives_a_merge_unchanged():
    text = (REPO / "reports/recipe_trials.md").read_text()
    header, rows = recipe_trials.read_table(text)
    assert len(header) == len(set(header)), "two columns with one name"
    assert all(len(r) == len(header) for r in rows)
    assert recipe_trials.merge(text, [], []) == text
