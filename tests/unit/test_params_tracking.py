import pytest
from conftest import REPO

from ferlab import params, tracking
from ferlab.errors import FerlabError


def test_project_params_load_with_every_section():
    p = params.load(REPO / "params.yaml")
    assert p.train.model == "ferlab_cnn"
    assert p.paths.model.endswith(".h5")
    assert p.preprocess.augment.horizontal_flip is True


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(FerlabError, match="unknown key\\(s\\) epoch in `params.train`"):
        params.load(path)


def test_flat_dict_for_trackers():
    flat = params.as_flat_dict({"train": {"lr": 1, "opts": {"a": 2}, "empty": {}}})
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
