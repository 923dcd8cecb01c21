"""Configs: TOML loading, validation errors that name the key, overrides, round trip, documentation."""

import dataclasses
import re
from pathlib import Path

import pytest

from thce.cli.experiment import packaged_config
from thce.config import ExperimentConfig, load_config, save_config
from thce.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["demo", "paper-cnn", "paper-lstm"])
def test_packaged_configs_load(name):
    config = load_config(packaged_config(name))
    # every shipped config also runs the ten-line non-deep reference (issue 12)
    assert config.methods == ("baseline", "proposed1", "proposed2", "logreg_stats")


def test_paper_configs_hold_the_papers_settings():
    for name, encoder in (("paper-cnn", "cnn"), ("paper-lstm", "lstm")):
        config = load_config(packaged_config(name))
        e = config.embedding
        assert (e.n_iter, e.epochs, e.last_epochs, e.head_only_epochs) == (5, 30, 150, 2)
        assert (e.beta_same, e.beta_other) == (5.0, 0.0)
        assert config.train.batch_size == 64 and config.train.learning_rate == 0.001
        assert config.detector.patience == 10 and config.baseline.patience == 10
        assert config.model.encoder == encoder
        assert (config.features.n_mels, config.features.hop_ms, config.features.frame_length_ms) == (64, 10.0, 25.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[embedding]\nalpah = 3\n", "unknown config key 'embedding.alpah'; did you mean 'alpha'?"),
        ("[embeding]\nalpha = 3\n", "unknown config key 'embeding'; did you mean 'embedding'?"),
        ("[embedding]\nalpha = 'big'\n", "embedding.alpha: expected a number, got 'big'"),
        ("[embedding]\nalpha = -1.0\n", "embedding.alpha: must be > 0"),
        ("[embedding]\nmax_clusters_per_class = -1\n", "embedding.max_clusters_per_class: must be >= 0, got -1"),
        ("[embedding]\nlearning_rate = 0.0\n", "embedding.learning_rate: must be > 0, got 0.0"),
        ("[detector]\nlearning_rate = -1e-3\n", "detector.learning_rate: must be > 0, got -0.001"),
        ("[detector]\nhead_only_learning_rate = 0\n", "detector.head_only_learning_rate: must be > 0, got 0"),
        ("[baseline]\nlearning_rate_decay = 'linear'\n",
         "baseline.learning_rate_decay: 'linear' is not one of none, cosine"),
        ("[detector]\nhead_only_selection = \"auc\"\n", "detector.head_only_selection: 'auc' is not one of val_loss"),
        ("[baseline]\nlearning_rate = 'fast'\n", "baseline.learning_rate: expected a number, got 'fast'"),
        ("[embedding]\nbeta_same = 0.0\nbeta_other = 1.0\n", "beta_other (1.0) must be smaller than beta_same"),
        ("[train]\nbatch_size = 0\n", "train.batch_size: must be >= 1"),
        ("[model]\nencoder = 'gru'\n", "model.encoder: 'gru' is not one of cnn, lstm"),
        ("methods = ['proposed2']\n", "proposed2 starts from proposed1"),
        ("methods = ['magic']\n", "not among"),
        ("[data]\nsplit_fractions = [0.5, 0.2, 0.2]\n", "summing to 1"),
        ("[synth]\ncounts = {cat = 3}\n", "unknown label 'cat'"),
        ("seed = 1.5\n", "seed: expected an integer"),
        ("[focal]\ngama = 1.0\n", "unknown config key 'focal.gama'; did you mean 'gamma'?"),
        ("[focl]\ngamma = 1.0\n", "unknown config key 'focl'; did you mean 'focal'?"),
        ("focal = 3\n", "focal: expected a table, got 3"),
        ("[ldam_drw]\ndrw_epoch = -1\n", "ldam_drw.drw_epoch: must be >= 0, got -1"),
        ("[focal]\nalpha = 'x'\n", "focal.alpha: expected a number, got 'x'"),
        ("[losses]\nfocal = {gamma = 1.0}\n", "unknown config key 'losses'"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_config(_write(tmp_path, text))
    assert str(tmp_path / "c.toml") in str(error.value)


def test_a_config_not_in_utf8_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes("seed = 0  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read the config ('utf-8' codec")):
        load_config(path)


def test_overrides_and_round_trip(tmp_path):
    config = load_config(None, ["embedding.alpha=8", "model.encoder=lstm", "data.classes=['dog', 'gun']", "seed=4"])
    assert config.embedding.alpha == 8.0 and config.model.encoder == "lstm"
    assert config.data.classes == ("dog", "gun") and config.seed == 4
    save_config(config, tmp_path / "resolved.toml")
    assert load_config(tmp_path / "resolved.toml") == config
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["embedding.alpha"])


def _keys(cls, prefix=""):
    for f in dataclasses.fields(cls):
        if cls is ExperimentConfig and f.name == "losses":  # each loss's table: [focal], [ldam_drw], ...
            for name, settings in ExperimentConfig().losses.items():
                yield from _keys(type(settings), f"{name}.")
        elif dataclasses.is_dataclass(f.type) or (isinstance(f.type, str) and f.type.endswith("Config")):
            sub = type(getattr(ExperimentConfig(), f.name))
            yield from _keys(sub, f"{f.name}.")
        else:
            yield prefix, f.name


def test_every_key_is_documented_in_readme():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    missing = [f"{p}{k}" for p, k in _keys(ExperimentConfig) if f"`{p}{k}`" not in table and f"`{k}`" not in table]
    # keys documented in grouped rows appear as `section.a`, `b`, ...
    missing = [k for k in missing if not re.search(rf"`{re.escape(k.split('.')[-1])}`", table)]
    assert not missing, f"README lacks config keys: {missing}"


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os

    from thce.io import atomic_write

    with atomic_write(tmp_path / "x.txt") as handle:
        handle.write("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_dotted_keys_are_set_by_one_function_for_set_and_for_sweep_variants():
    from thce.config import merge_overrides
    from thce.sweep import variant_config
    from thce.variants import Variant

    assert merge_overrides({"train": {"batch_size": 4}}, ["train.epochs=3", "new.key=x"]) == {
        "train": {"batch_size": 4, "epochs": 3}, "new": {"key": "x"}
    }
    with pytest.raises(ConfigError, match=r"^--set 'seed.x=2': 'seed' is not a table$"):
        merge_overrides({"seed": 1}, ["seed.x=2"])
    config = ExperimentConfig()
    assert variant_config(config, Variant.of({"embedding.alpha": 8.0})).embedding.alpha == 8.0
    with pytest.raises(ConfigError, match=r"^variant .*: 'methods' is not a table$"):
        variant_config(config, Variant.of({"methods.x": 1}))


def test_a_loss_is_its_class_its_settings_and_one_registry_entry(tmp_path, monkeypatch):
    """Issue 31: a loss added to LOSS_CONFIGS has its own table read into its settings (errors naming the table and
    the key), written back to config.toml and read again, and is a method of its own, without a field of
    ExperimentConfig or an entry of the methods' registry written by hand."""
    from thce.losses.imbalance import LOSS_CONFIGS, BinaryCrossEntropy, LossConfig
    from thce.methods import _imbalance

    class ScaledBCE(BinaryCrossEntropy):
        method = "scaled_bce"
        description = "BCE times a constant"

    @dataclasses.dataclass(frozen=True)
    class ScaledBCEConfig(LossConfig):
        loss = ScaledBCE
        scale: float = 1.0

        def validate(self) -> None:
            if self.scale <= 0:
                raise ConfigError(f"scaled_bce.scale: must be > 0, got {self.scale}")

    monkeypatch.setitem(LOSS_CONFIGS, "scaled_bce", ScaledBCEConfig)
    config = load_config(_write(tmp_path, "[scaled_bce]\nscale = 2\n[focal]\ngamma = 1.0\n"))
    assert config.loss_config("scaled_bce") == ScaledBCEConfig(scale=2.0)
    assert config.loss_config("focal").gamma == 1.0 and config.loss_config("bce") == LOSS_CONFIGS["bce"]()
    save_config(config, tmp_path / "saved.toml")
    assert "[scaled_bce]\nscale = 2.0\n" in (tmp_path / "saved.toml").read_text()
    assert load_config(tmp_path / "saved.toml") == config
    with pytest.raises(ConfigError, match=re.escape("unknown config key 'scaled_bce.scael'; did you mean 'scale'?")):
        load_config(_write(tmp_path, "[scaled_bce]\nscael = 2\n"))
    with pytest.raises(ConfigError, match=re.escape("--set scaled_bce.scale=0: must be > 0, got 0.0")):
        load_config(None, ["scaled_bce.scale=0"])
    method = _imbalance(ScaledBCEConfig)
    assert (method.name, method.description, method.sections) == (
        "scaled_bce", "BCE times a constant", ("baseline", "scaled_bce"),
    )  # fmt: skip
