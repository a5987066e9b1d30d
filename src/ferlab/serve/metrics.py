"""What `GET /metrics` exposes, in Prometheus' text format: the traffic, where the time goes, how
full the server is, which model answers and what it answers.

Each app has its own registry (several apps in one process, as in the tests, do not share counts).
Routes are labelled by their template, never by the path a client sent, so a scan of random URLs
cannot grow the label set.
"""

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ferlab.contract import EMOTIONS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
COUNT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST  # of GET /metrics
PROBABILITY_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class ServiceMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ferlab_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
        self.latency = Histogram("ferlab_request_seconds", "Time to answer a request", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("ferlab_requests_admitted", "Image requests admitted (running or waiting for a slot)", registry=r)
        self.queued_faces = Gauge("ferlab_batcher_queue_faces", "Faces waiting for the model", registry=r)
        self.batch_size = Histogram("ferlab_batch_faces", "Faces per model call (micro-batches)", buckets=COUNT_BUCKETS, registry=r)
        self.faces_per_image = Histogram("ferlab_faces_per_image", "Faces found per image", buckets=COUNT_BUCKETS, registry=r)
        self.emotions = Counter("ferlab_predicted_emotions", "Faces by predicted emotion", ["emotion"], registry=r)
        self.top_probability = Histogram(
            "ferlab_top_probability", "The predicted emotion's probability", buckets=PROBABILITY_BUCKETS, registry=r
        )
        self.model = Gauge("ferlab_model_info", "The model serving now (1)", ["name", "version", "source"], registry=r)
        self.answers_by_version = Counter("ferlab_answers_by_model", "Image requests answered, by model version", ["version"], registry=r)
        self.swaps = Counter("ferlab_model_reloads", "Model reloads, by outcome (swapped, unchanged, failed)", ["outcome"], registry=r)

    def serving(self, info: dict, previous: dict | None = None) -> None:
        if previous is not None:
            self.model.remove(*_model_labels(previous))
        self.model.labels(*_model_labels(info)).set(1)
        for emotion in info.get("emotions", EMOTIONS):  # each of the model's emotions has its series from the start, at 0
            self.emotions.labels(emotion)

    def answered(self, version, probabilities: np.ndarray, emotions: tuple[str, ...] = EMOTIONS) -> None:
        self.answers_by_version.labels(str(version)).inc()
        self.faces_per_image.observe(len(probabilities))
        if len(probabilities):
            for index, count in zip(*np.unique(probabilities.argmax(axis=1), return_counts=True)):
                self.emotions.labels(emotions[index]).inc(int(count))
            for top in probabilities.max(axis=1):
                self.top_probability.observe(float(top))

    def text(self) -> bytes:
        return generate_latest(self.registry)


def _model_labels(info: dict) -> tuple[str, str, str]:
    return str(info.get("name")), str(info.get("version")), str(info.get("source"))
