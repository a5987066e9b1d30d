"""MLflow: where runs go, and what every run is tagged with.

The embedded default is SQLite in the project root (`mlflow.db`, artifacts in
`mlartifacts/`). DVC sets DVC_ROOT for the stages it runs; `dvc exp run --temp`
and queued experiments run in a copy under <project>/.dvc/tmp/exps/, so the
project root is recovered from that path and every experiment lands in the same
database. MLFLOW_TRACKING_URI overrides all of this (a team server).
"""

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Mapping

from ferlab.config import project_root

# MLflow 3's UI opens an experiment in its model-training or its GenAI view by this tag
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def tracking_uri(env: Mapping[str, str] = os.environ) -> str:
    if env.get("MLFLOW_TRACKING_URI"):
        return env["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{project_root(env) / 'mlflow.db'}"


def store_missing(uri: str) -> bool:
    """Whether `uri` is a SQLite store whose file does not exist: no registry to ask, and
    asking MLflow would create an empty database."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def connect(env: Mapping[str, str] = os.environ) -> str | None:
    """Point MLflow at the project's store (or MLFLOW_TRACKING_URI) and return its URI; None
    when that is a SQLite file that does not exist yet (no runs, no registry)."""
    uri = tracking_uri(env)
    if store_missing(uri):
        return None
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


def artifact_location(env: Mapping[str, str] = os.environ) -> str | None:
    """Artifacts next to the embedded database; a server decides its own."""
    if env.get("MLFLOW_TRACKING_URI"):
        return None
    return (project_root(env) / "mlartifacts").as_uri()


def setup(experiment: str, env: Mapping[str, str] = os.environ):
    """Point MLflow at the project's store and return the experiment id."""
    import mlflow

    from ferlab.quiet import quiet_mlflow

    quiet_mlflow()
    location = artifact_location(env)  # before set_tracking_uri, which exports MLFLOW_TRACKING_URI
    mlflow.set_tracking_uri(tracking_uri(env))
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return mlflow.create_experiment(experiment, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING})
    if found.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:  # an experiment made before ferlab set it
        mlflow.MlflowClient().set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return found.experiment_id


def fer2013_dataset(fetch_summary: dict):
    """FER2013 as an MLflow dataset: where fetch read it, the table's checksum as its digest
    (MLflow keeps 36 characters), its columns, and the images per split as its profile."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    class Fer2013(MetaDataset):
        @property
        def profile(self):
            return {split: sum(counts.values()) for split, counts in fetch_summary["counts"].items()}

        def to_dict(self):
            return super().to_dict() | {"profile": json.dumps(self.profile)}

    return Fer2013(
        resolve_dataset_source(fetch_summary["source"]["path"]),
        name="fer2013",
        digest=fetch_summary["table_sha256"][:32],
        schema=Schema([ColSpec("integer", "label"), ColSpec("binary", "image"), ColSpec("string", "split")]),
    )


def git_commit(cwd: str | os.PathLike = ".") -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hardware(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU that trains, as the model card states it: model name, CPU count, and the
    instruction sets that decide the training precision (AMX, AVX512-BF16, else AVX2)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name", platform.machine())
    isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in fields.get("flags", "").split()][:2]
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return f"{name} (family {family}, model {model}), {os.cpu_count()} CPUs ({', '.join(isa) or 'no AVX2'})"


def run_name(env: Mapping[str, str] = os.environ) -> str | None:
    return env.get("DVC_EXP_NAME") or None


class RunTracker:
    """One MLflow run across stages and restarts: train starts or resumes it, evaluate reopens it."""

    def __init__(self, experiment: str, tags: dict[str, str] | None = None, env: Mapping[str, str] = os.environ):
        self.experiment_id = setup(experiment, env)
        self.tags = tags or {}
        self.env = env
        self.run_id: str | None = None

    def start(self, run_id: str | None = None) -> str:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run()
        if run_id:
            run = mlflow.start_run(run_id=run_id)
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name(self.env))
        mlflow.set_tags(self.tags)
        self.run_id = run.info.run_id
        return self.run_id

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags(tags)

    def log_params(self, params: dict) -> None:
        import mlflow

        # MLflow refuses to change a logged param, which a run resumed with other epochs or averaging
        # would try: the value it went on with is a tag, resumed_with.<param>
        existing = mlflow.get_run(self.run_id).data.params
        values = {k: ("null" if v is None else str(v))[:6000] for k, v in params.items()}
        fresh = {k: v for k, v in values.items() if k not in existing}
        if fresh:
            mlflow.log_params(fresh)
        changed = {f"resumed_with.{k}": v for k, v in values.items() if k in existing and existing[k] != v}
        if changed:
            mlflow.set_tags(changed)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)

    def log_dataset(self, dataset, context: str) -> None:
        import mlflow

        mlflow.log_input(dataset, context=context)

    def log_artifact(self, path, folder: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=folder)

    def log_artifacts(self, folder, destination: str | None = None) -> None:
        import mlflow

        mlflow.log_artifacts(str(folder), artifact_path=destination)

    def end(self) -> None:
        import mlflow

        mlflow.end_run()
