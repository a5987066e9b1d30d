"""A team shares data, models and experiments through a DVC remote (here a local folder) and a git
remote: one clone runs the slice pipeline and pushes, another pulls and has the same project."""

import hashlib
import json
import shutil

import pytest
from conftest import REPO

from integration.conftest import run

pytestmark = pytest.mark.slow

OUTPUTS = ("data/raw", "data/processed", "models", "reports")


def files(root):
    """Every file under the pipeline's output folders: relative path -> (sha256, mtime)."""
    found = {}
    for top in OUTPUTS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return found


def detect(root, env, image):
    return run(["ferlab", "detect", str(image), "--model", "models/bundle", "--json"], root, env, check=False)


def experiment(shown, name):
    """The experiment `name` in `dvc exp show --json`."""
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                if rev["name"] == name:
                    return rev["data"]
    raise AssertionError(f"no experiment {name} in dvc exp show")


def test_a_second_clone_pulls_the_pipeline_and_experiments_from_the_remotes(project, tmp_path):
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its astronaut photo")
    import cv2

    a, env = project
    storage, origin = tmp_path / "storage", tmp_path / "origin.git"
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))

    # the repo's .gitignore: data, models and the FER2013-face figures stay out of git, so only the
    # DVC remote can bring them to another clone
    shutil.copy(REPO / ".gitignore", a / ".gitignore")
    run(["dvc", "repro"], a, env)
    nowhere = run(["dvc", "push"], a, env, check=False)
    assert nowhere.returncode != 0 and "no remote specified" in nowhere.stderr and "dvc remote add -d" in nowhere.stderr
    run(["dvc", "remote", "add", "-d", "storage", str(storage)], a, env)
    run(["dvc", "push"], a, env)
    run(["git", "add", "-A"], a, env)
    run(["git", "commit", "-qm", "slice run, DVC remote"], a, env)
    branch = run(["git", "branch", "--show-current"], a, env).stdout.strip()
    run(["git", "init", "-q", "--bare", "-b", branch, str(origin)], tmp_path, env)
    run(["git", "remote", "add", "origin", str(origin)], a, env)
    run(["git", "push", "-q", "origin", branch], a, env)

    b = tmp_path / "b"
    run(["git", "clone", "-q", str(origin), str(b)], tmp_path, env)
    run(["dvc", "pull"], b, env)
    pulled = files(b)
    assert {k: h for k, (h, _) in pulled.items()} == {k: h for k, (h, _) in files(a).items()}
    assert "reports/evaluate/test_examples.png" in pulled and "data/raw/summary.json" in pulled
    assert run(["dvc", "status", "--json"], b, env).stdout.strip() == "{}"
    assert "Running stage" not in run(["dvc", "repro"], b, env).stdout
    assert files(b) == pulled  # nothing rewritten either

    # the pulled model is the one A trained: same faces, same probabilities
    found = detect(b, env, photo)
    assert found.returncode == 0, found.stderr
    ((answer,),) = [json.loads(found.stdout)]
    assert answer["faces"] and abs(sum(answer["faces"][0]["probabilities"].values()) - 1) < 1e-3
    assert json.loads(found.stdout) == json.loads(detect(a, env, photo).stdout)

    # an experiment travels with its params, metrics and outputs
    run(["dvc", "exp", "run", "-n", "tiny", "-S", "train.epochs=1"], a, env)
    run(["dvc", "exp", "push", "origin", "tiny"], a, env)
    run(["dvc", "exp", "pull", "origin", "tiny"], b, env)
    shown = experiment(json.loads(run(["dvc", "exp", "show", "--json"], b, env).stdout), "tiny")
    assert shown["params"]["params.yaml"]["data"]["train"]["epochs"] == 1
    assert shown["metrics"]["reports/metrics.json"]["data"] == json.loads((a / "reports/metrics.json").read_text())
    run(["dvc", "exp", "apply", "tiny"], b, env)
    assert run(["dvc", "status", "--json"], b, env).stdout.strip() == "{}"
    assert (b / "models/bundle/model.tflite").read_bytes() == (a / "models/bundle/model.tflite").read_bytes()

    # a pull never overwrites a model trained here and not yet committed
    mine = (b / "models/model.h5").read_bytes() + b"retrained here"
    (b / "models/model.h5").write_bytes(mine)
    refused = run(["dvc", "pull"], b, env, check=False)
    assert refused.returncode != 0 and "models/model.h5" in refused.stderr
    assert (b / "models/model.h5").read_bytes() == mine

    # a clone where the remote is missing: an error, and the clone keeps what git gave it
    c = tmp_path / "c"
    run(["git", "clone", "-q", str(origin), str(c)], tmp_path, env)
    unknown = run(["dvc", "pull", "-r", "nowhere"], c, env, check=False)
    assert unknown.returncode != 0 and "remote 'nowhere' doesn't exist" in unknown.stderr
    unmounted = tmp_path / "unmounted"  # a shared folder that is not mounted on this machine
    run(["dvc", "remote", "modify", "--local", "storage", "url", str(unmounted)], c, env)
    failed = run(["dvc", "pull"], c, env, check=False)
    assert failed.returncode != 0 and "failed to pull data from the cloud" in failed.stderr and "models/bundle" in failed.stderr
    assert not unmounted.exists()
    assert run(["git", "status", "--porcelain"], c, env).stdout == ""
    no_model = detect(c, env, photo)
    assert no_model.returncode != 0 and no_model.stderr.count("\n") == 1
    assert "no model at models/bundle" in no_model.stderr and "`dvc pull`" in no_model.stderr
