"""Config: presets, YAML files, --set overrides, clear refusals, run-dir round trip."""

from dataclasses import dataclass, field

import pytest

from shared import config as config_lib
from shared.config import ConfigError, TrainConfig


@dataclass
class ModelConfig:
    cell: str = "gru"
    units: int = 64


@dataclass
class DemoConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS = {"tiny": {"model": {"units": 8}, "train": {"epochs": 1}}, "small": {}}


def test_defaults_preset_yaml_and_set_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  units: 32\ntrain:\n  batch_size: 4\n")
    config = config_lib.resolve(
        DemoConfig, PRESETS, "tiny", path, ["train.batch_size=16", "model.cell=lstm"]
    )
    assert isinstance(config, DemoConfig) and isinstance(config.train, TrainConfig)
    assert config.model.units == 32  # the file beats the preset
    assert config.train.epochs == 1  # the preset beats the defaults
    assert config.train.batch_size == 16  # --set beats the file
    assert config.model.cell == "lstm"


def test_values_are_typed():
    config = config_lib.resolve(
        DemoConfig, overrides=["train.learning_rate=3e-4", "train.mixed_precision=true"]
    )
    assert config.train.learning_rate == pytest.approx(3e-4)
    assert config.train.mixed_precision is True


def test_unknown_keys_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="train.epoch"):
        config_lib.resolve(DemoConfig, overrides=["train.epoch=3"])
    path = tmp_path / "c.yaml"
    path.write_text("modle:\n  units: 3\n")
    with pytest.raises(ConfigError, match="modle"):
        config_lib.resolve(DemoConfig, config_file=path)


def test_bad_values_and_syntax_are_refused():
    with pytest.raises(ConfigError, match="model.units"):
        config_lib.resolve(DemoConfig, overrides=["model.units=many"])
    with pytest.raises(ConfigError, match="key=value"):
        config_lib.resolve(DemoConfig, overrides=["train.epochs"])
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        config_lib.resolve(DemoConfig, PRESETS, "huge")
    with pytest.raises(ConfigError, match="'train' is a section, not a value"):
        config_lib.resolve(DemoConfig, overrides=["train=3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=0", "train.batch_size=0: must be at least 1"),
        ("train.warmup_steps=-5", "train.warmup_steps=-5: must be at least 0"),
        ("train.learning_rate=0", "train.learning_rate=0.0: must be above 0"),
        ("train.time_limit_minutes=.nan", "train.time_limit_minutes=nan: must be a finite"),
    ],
)
def test_shared_settings_out_of_range_are_refused(override, message):
    config = config_lib.resolve(DemoConfig, overrides=[override])
    with pytest.raises(ConfigError, match=message):
        config_lib.check_ranges(config)
    config_lib.check_ranges(config_lib.resolve(DemoConfig))


def test_saved_config_reloads_identically(tmp_path):
    config = config_lib.resolve(DemoConfig, PRESETS, "tiny", overrides=["model.cell=rnn"])
    config_lib.save(config, tmp_path)
    assert config_lib.load(DemoConfig, tmp_path) == config
    again = config_lib.override(config, overrides=["train.epochs=7"])
    assert again.train.epochs == 7 and again.model == config.model
