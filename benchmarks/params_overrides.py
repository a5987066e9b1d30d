"""params.yaml with `dvc exp run -S` style overrides, for the benchmarks that train outside DVC."""

import tempfile
from pathlib import Path

import yaml

from ferlab import config


def overridden(path: str, overrides: list[str]) -> config.Params:
    """`section.key=value` sets a key; `+section.key=value` or `++section.key=value` may also add one
    (DVC's Hydra syntax).
    The values are YAML (`[48,96,192,384]`, `0.15`, `false`); the result is checked as params.yaml is."""
    raw = yaml.safe_load(Path(path).read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} is not SECTION.KEY=VALUE")
        adding = key.startswith("+")
        *parents, last = key.lstrip("+").split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {}) if adding else node[part]
        if not adding and last not in node:
            raise SystemExit(f"override {item!r}: no key {key!r} in {path} (a leading + adds one)")
        node[last] = yaml.safe_load(value)
    staged = Path(tempfile.mkdtemp(prefix="ferlab-params-")) / "params.yaml"
    staged.write_text(yaml.safe_dump(raw))
    return config.load(staged)
