"""Download FER2013 (Kaggle dataset msambare/fer2013) with the Kaggle API."""

import os
from pathlib import Path
from typing import Callable, Mapping

from ferlab.errors import DataError

DATASET = "msambare/fer2013"
HOW_TO_AUTHENTICATE = (
    "create an API token at https://www.kaggle.com/settings (API -> Create New Token) and save it as "
    "~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY"
)


def credentials_present(env: Mapping[str, str] = os.environ, home: Path | None = None) -> bool:
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return True
    if env.get("KAGGLE_API_TOKEN"):
        return True
    config_dir = Path(env["KAGGLE_CONFIG_DIR"]) if env.get("KAGGLE_CONFIG_DIR") else (home or Path.home()) / ".kaggle"
    return (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file()


def _default_client():
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise DataError("the Kaggle source needs the kaggle package: pip install 'ferlab[kaggle]'.") from None
    api = KaggleApi()
    api.authenticate()
    return api


def download(dest: Path, dataset: str = DATASET, client_factory: Callable[[], object] | None = None) -> Path:
    """Download the dataset's zip into `dest` (kept as a cache) and return its path."""
    if client_factory is None:
        if not credentials_present():
            raise DataError(f"no Kaggle credentials found: {HOW_TO_AUTHENTICATE}.")
        client_factory = _default_client
    dest.mkdir(parents=True, exist_ok=True)
    zip_path = dest / (dataset.split("/")[-1] + ".zip")
    if zip_path.is_file():
        return zip_path
    try:
        client = client_factory()
        client.dataset_download_files(dataset, path=str(dest), unzip=False, quiet=False)
    except DataError:
        raise
    except Exception as err:  # the client's own errors: network, 401/403, quota
        raise DataError(f"downloading {dataset} from Kaggle failed ({err}); {HOW_TO_AUTHENTICATE}.") from None
    if not zip_path.is_file():
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise DataError(f"Kaggle download of {dataset} did not produce {zip_path.name} in {dest} (found {found}).")
    return zip_path
