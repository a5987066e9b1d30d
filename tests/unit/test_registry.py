import socket

import mlflow
import pytest
from mlflow import MlflowClient

from ferlab.errors import FerlabError
from ferlab.lifecycle import registry

NAME = "ferlab-test"


@pytest.fixture
def client(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient()


def add_version(client, accuracy, macro_f1, candidate=True):
    if not client.search_registered_models(f"name='{NAME}'"):
        client.create_registered_model(NAME)
    mv = client.create_model_version(NAME, source="file:///nowhere", tags={"test_accuracy": str(accuracy), "test_macro_f1": str(macro_f1)})
    if candidate:
        client.set_registered_model_alias(NAME, registry.CANDIDATE, mv.version)
    return mv.version


def production(client):
    return str(client.get_model_version_by_alias(NAME, registry.PRODUCTION).version)


def test_first_promotion_takes_the_candidate(client):
    add_version(client, 0.60, 0.55)
    chosen, previous = registry.promote(NAME)
    assert chosen.version == "1" and previous is None
    assert production(client) == "1"
    assert chosen.tags["promoted_from"] == "none" and chosen.tags["promoted_at"]


def test_gate_refuses_a_worse_candidate_and_changes_nothing(client):
    add_version(client, 0.60, 0.55)
    registry.promote(NAME)
    add_version(client, 0.58, 0.56)
    with pytest.raises(FerlabError, match=r"not promoting version 2: test_accuracy 0.5800 is below production's 0.6000"):
        registry.promote(NAME)
    assert production(client) == "1"
    assert "promoted_at" not in registry.get(NAME, "2").tags


def test_better_candidate_passes_and_history_is_recorded(client):
    add_version(client, 0.60, 0.55)
    registry.promote(NAME)
    add_version(client, 0.62, 0.57)
    chosen, previous = registry.promote(NAME)
    assert (chosen.version, previous.version) == ("2", "1")
    assert chosen.tags["promoted_from"] == "1" and chosen.tags["promotion_reason"] == "passed the gate"


def test_force_needs_a_reason_and_records_it(client):
    add_version(client, 0.60, 0.55)
    registry.promote(NAME)
    add_version(client, 0.50, 0.40)
    with pytest.raises(FerlabError, match="--force needs --reason"):
        registry.promote(NAME, force=True)
    chosen, _ = registry.promote(NAME, force=True, reason="hotfix for a new camera")
    assert production(client) == "2"
    assert chosen.tags["promotion_reason"] == "hotfix for a new camera"
    assert "below production" in chosen.tags["promotion_overrode"]


def test_rollback_returns_to_the_previous_version(client):
    add_version(client, 0.60, 0.55)
    registry.promote(NAME)
    add_version(client, 0.61, 0.56)
    registry.promote(NAME)
    target, current = registry.rollback(NAME, reason="complaints")
    assert (target.version, current.version) == ("1", "2")
    assert production(client) == "1"
    assert registry.get(NAME, "2").tags["rollback_reason"] == "complaints"
    with pytest.raises(FerlabError, match="was the first in production"):
        registry.rollback(NAME)


def test_versions_are_listed_newest_first(client):
    add_version(client, 0.60, 0.55)
    add_version(client, 0.61, 0.56)
    listed = registry.versions(NAME)
    assert [v.version for v in listed] == ["2", "1"]
    assert listed[0].aliases == [registry.CANDIDATE] and listed[1].metric("test_accuracy") == 0.60


def test_bad_requests_are_clear_and_change_nothing(client):
    with pytest.raises(FerlabError, match="registered model 'ferlab-test': not found"):
        registry.promote(NAME)
    add_version(client, 0.60, 0.55, candidate=False)
    with pytest.raises(FerlabError, match="has no candidate version"):
        registry.promote(NAME)
    with pytest.raises(FerlabError, match="version 7 of 'ferlab-test': not found"):
        registry.promote(NAME, "7")
    with pytest.raises(FerlabError, match="no version of 'ferlab-test' has the alias 'production'; promote one"):
        registry.local_model_file(NAME, registry.PRODUCTION)
    assert registry.by_alias(NAME, registry.PRODUCTION) is None


def test_unreachable_registry(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
    with pytest.raises(FerlabError, match="cannot reach the MLflow registry"):
        registry.versions(NAME)
