"""Training on two machines with MultiWorkerMirroredStrategy, played by two processes on 127.0.0.1,
each in its own copy of the slice project, as each machine has its own checkout."""

import json
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from integration.conftest import free_port, run, set_params

pytestmark = pytest.mark.slow


def tf_config(addresses: list[str], index: int) -> dict:
    return {"TF_CONFIG": json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})}


def files(root) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def epoch_lines(output: str) -> list[str]:
    """The epoch lines without the clock and the epoch's seconds, which differ between workers."""
    return [re.sub(r" \d+s( \*best)?$", r"\1", line.split("] ", 1)[1]) for line in output.splitlines() if "] epoch " in line]


def two_machines(project, tmp_path, epochs: int, **params):
    """The slice project prepared up to training, a copy of it as the second machine, two free ports."""
    root, env = project
    set_params(root, **{"train.epochs": epochs, "train.batch_size": 16}, **params)  # per worker: 32 faces a step together
    run(["dvc", "repro", "preprocess"], root, env)
    machine_2 = tmp_path / "machine-2"
    shutil.copytree(root, machine_2, symlinks=True)
    ports = [free_port()]
    while len(ports) < 2:
        ports += [p for p in [free_port()] if p not in ports]
    return root, machine_2, env, [f"127.0.0.1:{port}" for port in ports]


def start(cwd, env, addresses, index, command=(sys.executable, "src/stages/train.py")):
    return subprocess.Popen(
        list(command), cwd=cwd, env=env | tf_config(addresses, index), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_workers_train_one_model_that_the_chief_alone_writes(project, tmp_path):
    root, machine_2, env, addresses = two_machines(project, tmp_path, epochs=1)
    before = files(machine_2)

    # the chief alone: the missing worker is named once the wait is over, and nothing is trained
    alone = run([sys.executable, "src/stages/train.py"], root, env | tf_config(addresses, 0) | {"FERLAB_WORKER_TIMEOUT": "3"}, check=False)
    assert alone.returncode == 1
    assert alone.stderr.strip().splitlines()[-1] == (
        f"error: {addresses[1]} (in TF_CONFIG) did not answer within 3 s; "
        "start every worker, or wait longer with FERLAB_WORKER_TIMEOUT=<seconds>."
    )

    # the chief through DVC, worker 1 as a plain script on its machine (its temporary files in a folder of its own)
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    chief = start(root, env, addresses, 0, command=("dvc", "repro", "train"))
    worker = start(machine_2, env | {"TMPDIR": str(worker_tmp)}, addresses, 1)
    chief_out, worker_out = (p.communicate(timeout=900)[0] for p in (chief, worker))
    assert chief.returncode == 0, chief_out[-3000:]
    assert worker.returncode == 0, worker_out[-3000:]

    # they trained together: two replicas in sync, the same global loss and accuracy on both
    assert "worker 0 of 2 (chief), 2 replica(s)" in chief_out and "worker 1 of 2, 2 replica(s)" in worker_out
    assert len(epoch_lines(chief_out)) == 1 and epoch_lines(chief_out) == epoch_lines(worker_out)
    assert "Traceback" not in chief_out + worker_out

    # the chief wrote one model and one MLflow run, naming the two workers
    assert (root / "models/model.h5").stat().st_size > 0
    assert len((root / "reports/train/history.csv").read_text().splitlines()) == 2
    with sqlite3.connect(root / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
        ((run_id, status),) = runs
        params = dict(db.execute("select key, value from params where run_uuid=?", (run_id,)))
        epochs = db.execute("select count(*) from metrics where run_uuid=? and key='val_accuracy'", (run_id,)).fetchone()[0]
        models = db.execute("select name, source_run_id from logged_models").fetchall()
    assert status == "FINISHED" and epochs == 1
    assert params["train.workers"] == "2" and params["train.replicas"] == "2"
    assert models == [("emotion_model", run_id)]
    assert json.loads((root / "reports/train/run.json").read_text())["run_id"] == run_id

    # worker 1 wrote nothing on its machine, and its throw-away state is gone
    assert files(machine_2) == before
    assert not list(worker_tmp.iterdir())


def test_when_a_worker_is_stopped_the_chief_says_so_and_a_restart_resumes_its_run(project, tmp_path):
    # averaging the last 2 epochs: the worker started again holds none of the chief's running average
    root, machine_2, env, addresses = two_machines(project, tmp_path, epochs=3, **{"train.average_epochs": 2})
    chief, worker = start(root, env, addresses, 0), start(machine_2, env, addresses, 1)
    seen = []
    for line in chief.stdout:  # stop worker 1 (as `kill` does) once the first epoch is saved
        seen.append(line)
        if "] epoch 1/3" in line:
            worker.terminate()
            break
    chief_out = "".join(seen) + chief.communicate(timeout=300)[0]
    worker.communicate(timeout=60)
    assert chief.returncode == 1 and worker.returncode != 0
    assert chief_out.strip().splitlines()[-1] == (
        "error: worker 1 stopped answering; start all workers again with the same TF_CONFIG to resume from the last finished epoch."
    )
    saved = json.loads((root / ".ferlab/train-state/state.json").read_text())
    assert 1 <= saved["epochs_done"] < 3 and not (root / "models/model.h5").exists()

    chief, worker = start(root, env, addresses, 0), start(machine_2, env, addresses, 1)
    chief_out, worker_out = (p.communicate(timeout=900)[0] for p in (chief, worker))
    assert chief.returncode == 0 and worker.returncode == 0, chief_out[-3000:] + worker_out[-3000:]
    resumed = f"resuming after epoch {saved['epochs_done']}"
    assert resumed in chief_out and resumed in worker_out  # the worker, which kept no state, follows the chief
    assert epoch_lines(chief_out) == epoch_lines(worker_out) and len(epoch_lines(chief_out)) == 3 - saved["epochs_done"]
    averaged = [line.split("] ", 1)[1] for line in chief_out.splitlines() if "average of the last 2 epochs" in line]
    assert len(averaged) == 1 and averaged[0] in worker_out  # both scored the chief's average of epochs 2 and 3, together
    with sqlite3.connect(root / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
    assert runs == [(saved["run_id"], "FINISHED")]  # the interrupted run, finished
    assert [row.split(",")[0] for row in (root / "reports/train/history.csv").read_text().splitlines()[1:]] == ["1", "2", "3"]
