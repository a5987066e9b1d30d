"""Training on several machines: each worker's role from TF_CONFIG, and waiting for the others to start."""

import json
import socket
import threading
import time

import pytest

from ferlab.errors import FerlabError
from ferlab.training import cluster


def tf_config(cluster_spec: dict, kind: str, index: int) -> dict:
    return {"TF_CONFIG": json.dumps({"cluster": cluster_spec, "task": {"type": kind, "index": index}})}


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_without_tf_config_one_process_trains_and_writes():
    alone = cluster.role({})
    assert alone.chief and not alone.multi_worker and alone.workers == 1


def test_worker_0_is_the_chief_unless_a_chief_task_is_named():
    workers = {"worker": ["a:1", "b:2", "c:3"]}
    first, second = cluster.role(tf_config(workers, "worker", 0)), cluster.role(tf_config(workers, "worker", 1))
    assert first.chief and first.multi_worker and first.workers == 3
    assert not second.chief and second.index == 1 and second.name == "worker 1"

    with_chief = {"chief": ["a:1"], "worker": ["b:2"]}
    chief, worker = cluster.role(tf_config(with_chief, "chief", 0)), cluster.role(tf_config(with_chief, "worker", 0))
    assert chief.chief and chief.workers == 2
    assert not worker.chief and worker.index == 1 and worker.name == "worker 0"


def test_a_cluster_of_one_trains_as_a_single_process():
    assert not cluster.role(tf_config({"worker": ["a:1"]}, "worker", 0)).multi_worker


@pytest.mark.parametrize(
    "text, message",
    [
        ("{cluster", "not a JSON object"),
        ('["a:1"]', "not a JSON object"),
        (json.dumps({"cluster": ["a:1", "b:2"], "task": {"type": "worker", "index": 0}}), "not a JSON object"),
        (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}), "names ps tasks"),
        (json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}), "task 'worker' 2 is not in"),
        (json.dumps({"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}), "must be host:port"),
    ],
)
def test_a_wrong_tf_config_is_one_sentence_naming_it(text, message):
    with pytest.raises(FerlabError, match=message):
        cluster.role({"TF_CONFIG": text})


def test_the_join_timeout_is_read_from_the_environment():
    assert cluster.join_timeout({}) == cluster.DEFAULT_TIMEOUT_S
    assert cluster.join_timeout({cluster.TIMEOUT_ENV: "30"}) == 30
    for wrong in ("soon", "0"):
        with pytest.raises(FerlabError, match=cluster.TIMEOUT_ENV):
            cluster.join_timeout({cluster.TIMEOUT_ENV: wrong})


def test_workers_wait_for_each_other_and_a_missing_one_is_named_after_the_timeout():
    spec = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    ports = [int(address.rpartition(":")[2]) for address in spec["worker"]]
    late = cluster.role(tf_config(spec, "worker", 1))
    errors, through, done = [], threading.Event(), threading.Event()

    def start_late():
        time.sleep(1.0)
        try:
            cluster.wait_for_workers(late, 10)
        except FerlabError as err:
            errors.append(err)
        through.set()
        with socket.create_server(("", ports[1])):  # as TensorFlow's server then does
            done.wait(10)

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        cluster.wait_for_workers(cluster.role(tf_config(spec, "worker", 0)), 10)  # returns once worker 1 answers
        # Worker 1 may not have reached worker 0 yet: TensorFlow's server answers on worker 0's port from now on.
        with socket.create_server(("", ports[0])):
            through.wait(15)
    finally:
        done.set()
        thread.join()
    assert not errors

    started = time.monotonic()
    with pytest.raises(FerlabError, match=f"{spec['worker'][1]} .* did not answer within 1 s"):
        cluster.wait_for_workers(cluster.role(tf_config(spec, "worker", 0)), 1)
    assert time.monotonic() - started < 5


def test_a_lost_worker_is_named_and_the_way_to_resume_given():
    me = cluster.role(tf_config({"worker": ["a:1", "b:2"]}, "worker", 0))
    tf_message = (
        "{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0/device:CPU:0}} Collective ops is aborted by: "
        "Error received from peer /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf"
    )
    message = str(cluster.lost_worker(RuntimeError(tf_message), me))
    assert message.startswith("worker 1 stopped answering") and "resume from the last finished epoch" in message
