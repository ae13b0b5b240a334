"""One config system: dataclass schemas, named presets, a YAML file and `--set key=value`.

Resolution order, later wins: the schema's defaults, the preset, the YAML file, the
`--set` overrides. Unknown keys and ill-typed values are refused with a message that
names them. The resolved config is written to the run dir as `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from shared.errors import RnnsuiteError

PRESETS = ("tiny", "small", "base")
CONFIG_FILE = "config.yaml"


def data_dir() -> Path:
    """Where generated corpora and caches live: `$RNNSUITE_DATA_DIR` or ~/.cache/rnnsuite."""
    return Path(os.environ.get("RNNSUITE_DATA_DIR", Path.home() / ".cache" / "rnnsuite"))


class ConfigError(RnnsuiteError):
    """A config that cannot be resolved: unknown key, bad value, missing preset."""


@dataclass
class TrainConfig:
    """Settings of the shared training loop (`shared.training.train`)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    # constant | cosine | exponential; cosine and exponential decay over the planned steps
    # after the warm-up.
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    clipnorm: float = 1.0
    weight_decay: float = 0.0
    # Stop when the validation loss has not improved for this many epochs (0 = never).
    early_stopping_patience: int = 0
    steps_per_epoch: int | None = None
    # Budget of training time in minutes, earlier runs of a resumed run dir included (0 =
    # none): training stops after the last epoch that is expected to end within it (epochs
    # are never cut short, so checkpoints stay whole), and a decaying lr_schedule decays
    # over the epochs that fit when fewer than planned.
    time_limit_minutes: float = 0.0
    seed: int = 1234
    mixed_precision: bool = False
    # Compile train steps with XLA: faster recurrent steps on CPU, but one compilation per
    # distinct batch shape.
    jit_compile: bool = False
    # default | mirrored | multi_worker (TF_CONFIG) | tpu
    strategy: str = "default"
    keep_checkpoints: int = 3
    # Keras progress display: 1 = progress bar, 2 = one line per epoch, 0 = silent.
    verbose: int = 1


@dataclass
class DecodeConfig:
    """Search settings of the attentive decoders (translation, captioning)."""

    beam_width: int = 4  # 1 = greedy
    # GNMT length penalty exponent: 0 = raw log-probability, higher favours longer outputs.
    length_penalty: float = 0.6


# Least values of shared settings (section, key), which Keras would fail on deep inside.
_LEAST = {
    ("train", "epochs"): 0,
    ("train", "batch_size"): 1,
    ("train", "warmup_steps"): 0,
    ("train", "clipnorm"): 0,
    ("train", "weight_decay"): 0,
    ("train", "early_stopping_patience"): 0,
    ("train", "steps_per_epoch"): 1,
    ("train", "time_limit_minutes"): 0,
    ("train", "keep_checkpoints"): 1,
    ("decode", "beam_width"): 1,
}


def check_ranges(config) -> None:
    """Refuses shared settings out of range (`decode.beam_width=0`), in one line."""
    for (section, key), least in _LEAST.items():
        value = getattr(getattr(config, section, None), key, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{key}={value}: must be a finite number")
        if isinstance(value, (int, float)) and value < least:
            raise ConfigError(f"{section}.{key}={value}: must be at least {least}")
    rate = getattr(getattr(config, "train", None), "learning_rate", None)
    if isinstance(rate, float) and not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"train.learning_rate={rate}: must be above 0")


def resolve(
    schema: type,
    presets: dict[str, dict] | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
):
    """Builds a config object of dataclass type `schema`.

    Args:
        schema: the task's config dataclass.
        presets: preset name -> nested dict of values that differ from the defaults.
        preset: which preset to start from (None: the schema's defaults).
        config_file: a YAML file with a (partial) nested config.
        overrides: `key.sub=value` strings; values are parsed as YAML (`3`, `1e-3`, `true`).

    Raises:
        ConfigError: naming the unknown key, the bad value or the missing preset.
    """
    layers = [OmegaConf.structured(schema)]
    if preset is not None:
        presets = presets or {}
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
        layers.append(OmegaConf.create(presets[preset]))
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        layers.append(OmegaConf.create(loaded))
    layers.append(_parse_overrides(overrides))
    for layer in layers[1:]:
        _check_sections(schema, OmegaConf.to_container(layer))
    try:
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as error:
        raise ConfigError(f"unknown config key {_key_of(error)!r} for {schema.__name__}") from None
    except OmegaConfBaseException as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(f"bad value for {_key_of(error)!r}: {reason}") from None


def override(config, config_file=None, overrides=()):
    """Re-resolves an existing config object with a YAML file and `--set` overrides on top."""
    return resolve(type(config), {"current": to_dict(config)}, "current", config_file, overrides)


def _check_sections(schema: type, values: dict, prefix: str = "") -> None:
    """Refuses a plain value given for a section (`--set train=3`), which OmegaConf's merge
    reports without naming the key."""
    types = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        if field.name not in values or not dataclasses.is_dataclass(types[field.name]):
            continue
        key, value = prefix + field.name, values[field.name]
        if not isinstance(value, dict):
            raise ConfigError(f"{key!r} is a section, not a value: set its keys ({key}.KEY=...)")
        _check_sections(types[field.name], value, key + ".")


def _key_of(error: OmegaConfBaseException) -> str:
    return getattr(error, "full_key", None) or getattr(error, "key", None) or "?"


def _parse_overrides(overrides) -> Any:
    values: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is set twice")
        node[leaf] = value
    return OmegaConf.create(values)


def to_dict(config) -> dict:
    """Plain nested dict of a config dataclass."""
    return dataclasses.asdict(config)


def save(config, run_dir: str | Path) -> Path:
    """Writes the resolved config to `run_dir/config.yaml`."""
    path = Path(run_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path


def load(schema: type, run_dir: str | Path, overrides=()):
    """Reads a run dir's `config.yaml` back into `schema`, with optional overrides."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {CONFIG_FILE}; is this a run dir made by `train`?")
    return resolve(schema, config_file=path, overrides=overrides)
