import dataclasses

import pytest
import yaml
from conftest import REPO

from ferlab import config
from ferlab.errors import FerlabError
from ferlab.lifecycle import tracking


def test_project_params_load_with_every_section():
    p = config.load(REPO / "params.yaml")
    assert p.train.model == "ferlab_cnn"
    assert p.paths.model.endswith(".h5")
    assert p.preprocess.augment.horizontal_flip is True


def differences(loaded, default, where: str = "params") -> list[str]:
    """Each setting whose value in `loaded` differs from `default`'s."""
    found = []
    for f in dataclasses.fields(default):
        a, b = getattr(loaded, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(b):
            found += differences(a, b, f"{where}.{f.name}")
        elif a != b:
            found.append(f"{where}.{f.name}: params.yaml {a!r}, config.py {b!r}")
    return found


def unspelled(data: dict, default, where: str = "params") -> list[str]:
    """Each setting of `default` that the params.yaml mapping `data` leaves out."""
    found = []
    for f in dataclasses.fields(default):
        if f.name not in data:
            found.append(f"{where}.{f.name}")
        elif dataclasses.is_dataclass(getattr(default, f.name)):
            found += unspelled(data[f.name], getattr(default, f.name), f"{where}.{f.name}")
    return found


def test_the_defaults_are_the_committed_params():
    """One source of defaults: the dataclasses' defaults are params.yaml's values, key for key, so
    Params() (the tools outside a project) and a params.yaml that leaves a key out mean the same recipe;
    and every setting is spelled in params.yaml, where `dvc exp run -S` and `dvc params diff` see it."""
    assert differences(config.load(REPO / "params.yaml"), config.Params()) == []
    assert unspelled(yaml.safe_load((REPO / "params.yaml").read_text()), config.Params()) == []


def test_the_defaults_check_sees_a_disagreement_and_a_missing_key(tmp_path):
    text = (REPO / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("  epochs: 45", "  epochs: 44").replace("  zoom: 0.1", "  zoom: 0.2"))
    assert differences(config.load(path), config.Params()) == [
        "params.preprocess.augment.zoom: params.yaml 0.2, config.py 0.1",
        "params.train.epochs: params.yaml 44, config.py 45",
    ]
    data = yaml.safe_load(text)
    del data["train"]["momentum"]
    assert unspelled(data, config.Params()) == ["params.train.momentum"]


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(FerlabError, match="unknown key\\(s\\) epoch in `params.train`"):
        config.load(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("package:\n  tflite: float61\n", "`params.package.tflite` must be one of float16, dynamic, none, not 'float61'"),
        ("train:\n  epochs: ten\n", "`params.train.epochs` must be an integer, not 'ten'"),
        ("train:\n  epochs: 2.5\n", "`params.train.epochs` must be an integer, not 2.5"),
        ("train:\n  deterministic: 1\n", "`params.train.deterministic` must be true or false, not 1"),
        ("train:\n  optimizer: SGD\n", "`params.train.optimizer` must be one of adam, adamw, sgd, not 'SGD'"),
        ("fetch:\n  limit_per_class: many\n", "`params.fetch.limit_per_class` must be an integer or null, not 'many'"),
        ("fetch:\n  candidates: archive.zip\n", "`params.fetch.candidates` must be a list, not 'archive.zip'"),
        ("preprocess:\n  augment:\n    zoom: lots\n", "`params.preprocess.augment.zoom` must be a number, not 'lots'"),
    ],
)
def test_wrong_values_stop_at_loading(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(FerlabError, match=message.replace("(", "\\(").replace(")", "\\)").replace(".", "\\.")):
        config.load(path)


def test_right_values_of_every_kind_load(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "fetch:\n  limit_per_class: 12\n  sha256: {a.zip: abc}\ntrain:\n  learning_rate: 1\n"
        "  model_options: {widths: [8, 16]}\nvalidate:\n  exact_counts: yes\n"
    )
    loaded = config.load(path)
    assert loaded.train.learning_rate == 1 and loaded.validate.exact_counts is True


def test_flat_dict_for_trackers():
    flat = config.as_flat_dict({"train": {"lr": 1, "opts": {"a": 2}, "empty": {}}})
    assert flat == {"train.lr": 1, "train.opts.a": 2, "train.empty": {}}


def test_tracking_uri_defaults_to_sqlite_in_project_root(tmp_path):
    assert tracking.tracking_uri({"DVC_ROOT": str(tmp_path)}) == f"sqlite:///{tmp_path}/mlflow.db"


def test_temp_experiments_log_to_the_project_database(tmp_path):
    temp_root = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    assert tracking.tracking_uri({"DVC_ROOT": str(temp_root)}) == f"sqlite:///{tmp_path}/mlflow.db"


def test_environment_server_wins():
    env = {"MLFLOW_TRACKING_URI": "http://mlflow.team:5000", "DVC_ROOT": "/x"}
    assert tracking.tracking_uri(env) == "http://mlflow.team:5000"
    assert tracking.artifact_location(env) is None


def test_run_name_comes_from_dvc():
    assert tracking.run_name({"DVC_EXP_NAME": "bushy-lamp"}) == "bushy-lamp"
    assert tracking.run_name({}) is None


def test_training_runs_name_fer2013_and_open_in_the_model_training_view(tmp_path):
    import json

    import mlflow
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    summary = {
        "source": {"kind": "archive", "path": str(tmp_path / "archive.zip")},
        "table_sha256": "ab" * 32,
        "counts": {"Training": {"happy": 3, "sad": 2}, "PublicTest": {"happy": 1, "sad": 1}, "PrivateTest": {"happy": 2}},
    }
    tracker = tracking.RunTracker("trials", env=env)
    run_id = tracker.start()
    tracker.log_dataset(tracking.fer2013_dataset(summary), context="training")
    tracker.end()
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    (given,) = run.inputs.dataset_inputs
    assert given.dataset.name == "fer2013" and given.dataset.digest == "ab" * 16
    assert json.loads(given.dataset.profile) == {"Training": 5, "PublicTest": 2, "PrivateTest": 2}
    assert str(tmp_path / "archive.zip") in given.dataset.source
    assert [t.value for t in given.tags] == ["training"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND] == "custom_model_development"

    # an experiment made before ferlab set the kind gets it when next used
    old = mlflow.create_experiment("older")
    tracking.setup("older", env)
    assert client.get_experiment(old).tags[tracking.EXPERIMENT_KIND] == "custom_model_development"


def test_the_tools_go_by_one_configuration(tmp_path, monkeypatch):
    """Every tool's model rule (ferlab.inference.sources.resolve: the registry's production alias, the
    checkout's bundle or .h5) and `ferlab models` read the same params: the project's params.yaml
    where there is one, the defaults elsewhere."""
    from ferlab.inference.sources import production_uri, resolve

    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/no-registry.db"}
    monkeypatch.chdir(tmp_path)
    assert config.current() == config.Params()
    assert production_uri() == "models:/ferlab-emotion@production"
    (tmp_path / "params.yaml").write_text("paths:\n  bundle: out/bundle\n  model: out/m.h5\npackage:\n  registered_model: faces\n")
    assert production_uri() == "models:/faces@production"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m.h5").write_bytes(b"")
    assert resolve(None, env).source == "out/m.h5"
    (tmp_path / "out" / "bundle").mkdir(parents=True)
    (tmp_path / "out" / "bundle" / "model.h5").write_bytes(b"")
    assert resolve(None, env).source == "out/bundle"
    (tmp_path / "params.yaml").write_text("package:\n  tflite: float61\n")
    with pytest.raises(FerlabError, match="float61"):  # a broken params.yaml stops the tools too, in one sentence
        production_uri()


def test_a_run_resumed_with_another_value_keeps_the_first_param_and_tags_the_new_one(tmp_path):
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    tracker = tracking.RunTracker("trials", env=env)
    run_id = tracker.start()
    tracker.log_params({"train.epochs": 120, "train.seed": 42})
    tracker.end()
    resumed = tracking.RunTracker("trials", env=env)
    resumed.start(run_id)
    resumed.log_params({"train.epochs": 100, "train.seed": 42, "train.average_epochs": 20})
    resumed.end()
    run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id)
    assert run.data.params == {"train.epochs": "120", "train.seed": "42", "train.average_epochs": "20"}
    assert {k: v for k, v in run.data.tags.items() if k.startswith("resumed_with.")} == {"resumed_with.train.epochs": "100"}
