"""SonaConfig: validation of every field, presets, replace(), dict round-trip."""

import dataclasses
import json
import math

import numpy as np
import pytest

import sona.config
from sona.config import SonaConfig

PRESETS = [
    "max_throughput",
    "max_quality",
    "edge_deployment",
    "batch_processing",
    "for_ephemeral",
    "for_coordinator",
]


# ----------------------------------------------------------------------------- defaults


def test_defaults_are_valid_and_embedding_dim_follows_hidden_dim():
    cfg = SonaConfig()
    assert cfg.hidden_dim == 256
    assert cfg.embedding_dim == 256
    cfg = SonaConfig(hidden_dim=384)
    assert cfg.embedding_dim == 384
    assert SonaConfig(hidden_dim=384, embedding_dim=384).embedding_dim == 384


def test_embedding_dim_other_than_hidden_dim_is_refused_by_the_config():
    with pytest.raises(ValueError, match=r"embedding_dim must equal hidden_dim \(384\).*got 128"):
        SonaConfig(hidden_dim=384, embedding_dim=128)
    with pytest.raises(ValueError, match="embedding_dim must equal hidden_dim"):
        SonaConfig.from_dict({"hidden_dim": 64, "embedding_dim": 32})
    with pytest.raises(ValueError, match="embedding_dim must equal hidden_dim"):
        SonaConfig().replace(embedding_dim=128)


def test_reference_field_names_exist():
    # The reference crate's SonaConfig fields that sona keeps under the same name.
    names = {f.name for f in dataclasses.fields(SonaConfig)}
    for name in [
        "hidden_dim", "embedding_dim", "micro_lora_rank", "base_lora_rank", "micro_lora_lr",
        "pattern_clusters", "trajectory_capacity", "quality_threshold",
    ]:  # fmt: skip
        assert name in names


def test_frozen():
    cfg = SonaConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hidden_dim = 3  # type: ignore[misc]


def test_equality_and_hash():
    assert SonaConfig(hidden_dim=64) == SonaConfig(hidden_dim=64)
    assert hash(SonaConfig(hidden_dim=64)) == hash(SonaConfig(hidden_dim=64))
    assert SonaConfig(hidden_dim=64) != SonaConfig(hidden_dim=65)


def test_numpy_scalars_are_normalised_to_python_types():
    cfg = SonaConfig(hidden_dim=np.int64(64), micro_lora_lr=np.float32(0.5), seed=np.uint32(7))
    assert type(cfg.hidden_dim) is int and cfg.hidden_dim == 64
    assert type(cfg.micro_lora_lr) is float
    assert type(cfg.seed) is int
    json.dumps(cfg.to_dict())  # would fail on numpy scalars


def test_int_given_for_float_field_becomes_float():
    cfg = SonaConfig(background_interval_s=2, quality_threshold=1)
    assert type(cfg.background_interval_s) is float and cfg.background_interval_s == 2.0
    assert type(cfg.quality_threshold) is float


# ----------------------------------------------------------------------------- validation

BIG = 10**12

# (field, bad value, text that must appear in the message besides field name and value)
VALUE_ERRORS = [
    ("hidden_dim", 0, "[1, 65536]"),
    ("hidden_dim", -5, "[1, 65536]"),
    ("hidden_dim", 65537, "[1, 65536]"),
    ("embedding_dim", 0, "[1, 65536]"),
    ("embedding_dim", 70000, "[1, 65536]"),
    ("embedding_dim", 255, "equal hidden_dim (256)"),
    ("micro_lora_rank", 0, "[1, 2]"),
    ("micro_lora_rank", 3, "[1, 2]"),
    ("base_lora_rank", 0, "[1, 64]"),
    ("base_lora_rank", 65, "[1, 64]"),
    ("micro_lora_lr", 0.0, "(0, 1]"),
    ("micro_lora_lr", -0.001, "(0, 1]"),
    ("micro_lora_lr", 1.5, "(0, 1]"),
    ("micro_lora_lr", math.nan, "(0, 1]"),
    ("micro_lora_lr", math.inf, "(0, 1]"),
    ("pattern_clusters", 0, "[1, 1000000]"),
    ("max_patterns", 0, "[1, 1000000]"),
    ("max_patterns", 10**7, "[1, 1000000]"),
    ("trajectory_capacity", 0, "[1, 16777216]"),
    ("trajectory_capacity", -1, "[1, 16777216]"),
    ("trajectory_capacity", BIG, "[1, 16777216]"),
    ("max_trajectory_steps", 0, "[1, 1024]"),
    ("max_trajectory_steps", 1025, "[1, 1024]"),
    ("max_open_trajectories", 0, "[1, 16777216]"),
    ("max_open_trajectories", BIG, "[1, 16777216]"),
    ("open_trajectory_timeout_s", 0.0, "(0, 604800]"),
    ("open_trajectory_timeout_s", -3.0, "(0, 604800]"),
    ("open_trajectory_timeout_s", math.inf, "(0, 604800]"),
    ("quality_threshold", -0.01, "[0, 1]"),
    ("quality_threshold", 1.01, "[0, 1]"),
    ("quality_threshold", math.nan, "[0, 1]"),
    ("background_interval_s", 0.0, "(0, 604800]"),
    ("background_interval_s", -1.0, "(0, 604800]"),
    ("background_interval_s", 1e9, "(0, 604800]"),
    ("background_interval_s", math.nan, "(0, 604800]"),
    ("embedding_dtype", "float64", "('float32', 'float16')"),
    ("embedding_dtype", "bfloat16", "('float32', 'float16')"),
    ("embedding_dtype", "", "('float32', 'float16')"),
    ("seed", -1, "[0, 18446744073709551615]"),
    ("seed", 2**64, "[0, 18446744073709551615]"),
]


@pytest.mark.parametrize("name, value, allowed", VALUE_ERRORS)
def test_bad_value_raises_value_error_naming_field_range_and_value(name, value, allowed):
    with pytest.raises(ValueError) as info:
        SonaConfig(**{name: value})
    msg = str(info.value)
    assert f"SonaConfig.{name}" in msg
    assert allowed in msg
    assert repr(value) in msg or str(value) in msg


TYPE_ERRORS = [
    ("hidden_dim", "256"),
    ("hidden_dim", 256.0),
    ("hidden_dim", True),
    ("hidden_dim", None),
    ("embedding_dim", 1.5),
    ("micro_lora_rank", 2.0),
    ("base_lora_rank", "8"),
    ("micro_lora_lr", "0.1"),
    ("micro_lora_lr", None),
    ("pattern_clusters", 3.0),
    ("max_patterns", None),
    ("trajectory_capacity", "1000"),
    ("max_trajectory_steps", 2.5),
    ("max_open_trajectories", False),
    ("open_trajectory_timeout_s", "60"),
    ("quality_threshold", complex(0.5, 0)),
    ("background_interval_s", None),
    ("embedding_dtype", 16),
    ("embedding_dtype", np.float16),
    ("seed", 1.0),
    ("seed", "0"),
]


@pytest.mark.parametrize("name, value", TYPE_ERRORS)
def test_wrong_type_raises_type_error_naming_field(name, value):
    with pytest.raises(TypeError) as info:
        SonaConfig(**{name: value})
    assert f"SonaConfig.{name}" in str(info.value)
    assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize("name", ["micro_lora_rank", "base_lora_rank"])
def test_rank_above_hidden_dim_is_rejected(name):
    with pytest.raises(ValueError, match=rf"SonaConfig\.{name} must be <= hidden_dim \(1\), got 2"):
        SonaConfig(**{"hidden_dim": 1, "micro_lora_rank": 1, "base_lora_rank": 1, name: 2})
    # Equal is fine.
    cfg = SonaConfig(hidden_dim=2, micro_lora_rank=2, base_lora_rank=2)
    assert cfg.base_lora_rank == 2


def test_base_rank_above_small_hidden_dim():
    with pytest.raises(ValueError, match=r"base_lora_rank must be <= hidden_dim \(4\), got 8"):
        SonaConfig(hidden_dim=4)


def test_pattern_clusters_above_max_patterns():
    with pytest.raises(
        ValueError, match=r"pattern_clusters must be <= max_patterns \(10\), got 11"
    ):
        SonaConfig(pattern_clusters=11, max_patterns=10)


def test_boundaries_are_accepted():
    SonaConfig(
        hidden_dim=65536,
        micro_lora_rank=1,
        base_lora_rank=64,
        micro_lora_lr=1.0,
        pattern_clusters=1,
        max_patterns=1,
        trajectory_capacity=1 << 24,
        max_trajectory_steps=1024,
        max_open_trajectories=1,
        open_trajectory_timeout_s=604800.0,
        quality_threshold=0.0,
        background_interval_s=1e-3,
        embedding_dtype="float16",
        seed=2**64 - 1,
    )
    SonaConfig(hidden_dim=1, micro_lora_rank=1, base_lora_rank=1, quality_threshold=1.0)


def test_unknown_keyword_is_a_type_error_naming_the_valid_fields():
    with pytest.raises(TypeError, match=r"SonaConfig\(\): unknown field\(s\) 'enable_simd'.*"
                       r"valid fields are hidden_dim.*set_backend"):
        SonaConfig(enable_simd=True)  # type: ignore[call-arg]


def test_only_hidden_dim_is_positional():
    assert SonaConfig(64, base_lora_rank=4).hidden_dim == 64
    with pytest.raises(TypeError, match=r"only hidden_dim by position.*got 3 positional"):
        SonaConfig(64, None, 2)


# Both were validated and never read (the engine's output was the same for any value): asking
# for them is an error that says where the concept lives instead.
REMOVED = [("ewc_lambda", 2.0, r"sona\.Router\(\.\.\., ewc_lambda=\.\.\.\)"),
           ("base_lora_lr", 1e-3, r"step size is micro_lora_lr.*sona\.Router\(\.\.\., lr=")]


@pytest.mark.parametrize("name, value, replacement", REMOVED)
def test_removed_fields_raise_naming_the_replacement(name, value, replacement):
    assert name in sona.config.REMOVED_FIELDS
    assert name not in SonaConfig().to_dict()
    with pytest.raises(TypeError, match=rf"'{name}'.*{name}: removed.*{replacement}"):
        SonaConfig(**{name: value})
    with pytest.raises(TypeError, match=replacement):
        SonaConfig().replace(**{name: value})
    with pytest.raises(TypeError, match=replacement):
        SonaConfig.max_quality(**{name: value})
    with pytest.raises(ValueError, match=replacement):
        SonaConfig.from_dict({name: value})
    with pytest.raises(TypeError, match=replacement):
        sona.SonaEngine(hidden_dim=8, base_lora_rank=2, **{name: value})


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_valid_and_documented(name):
    factory = getattr(SonaConfig, name)
    cfg = factory()
    assert isinstance(cfg, SonaConfig)
    assert cfg == SonaConfig.from_dict(cfg.to_dict())
    doc = factory.__doc__
    assert doc and "Trades" in doc


@pytest.mark.parametrize("name", PRESETS)
def test_preset_accepts_overrides(name):
    cfg = getattr(SonaConfig, name)(hidden_dim=384, seed=9)
    assert cfg.hidden_dim == 384 and cfg.embedding_dim == 384 and cfg.seed == 9
    base = getattr(SonaConfig, name)()
    assert cfg.base_lora_rank == base.base_lora_rank  # the rest of the preset is kept


@pytest.mark.parametrize("name", PRESETS)
def test_preset_overrides_are_validated(name):
    with pytest.raises(ValueError, match="micro_lora_rank"):
        getattr(SonaConfig, name)(micro_lora_rank=5)
    with pytest.raises(TypeError, match=rf"SonaConfig\.{name}\(\): unknown field\(s\) 'bogus'"):
        getattr(SonaConfig, name)(bogus=1)


def test_presets_listed_and_distinct():
    assert tuple(PRESETS) == SonaConfig.PRESETS
    configs = [getattr(SonaConfig, n)() for n in PRESETS]
    assert len(set(configs)) == len(configs)


def test_preset_trades_are_what_the_docstrings_say():
    edge = SonaConfig.edge_deployment()
    assert edge.micro_lora_rank == 1 and edge.embedding_dtype == "float16"
    assert edge.trajectory_capacity < SonaConfig().trajectory_capacity
    assert SonaConfig.max_quality().base_lora_rank > SonaConfig.max_throughput().base_lora_rank
    coord = SonaConfig.for_coordinator()
    assert coord.trajectory_capacity > SonaConfig.for_ephemeral().trajectory_capacity
    assert coord.max_patterns > SonaConfig.for_ephemeral().max_patterns


# ----------------------------------------------------------------------------- replace


def test_replace_returns_validated_copy():
    cfg = SonaConfig()
    new = cfg.replace(base_lora_rank=16, seed=3)
    assert new.base_lora_rank == 16 and new.seed == 3
    assert cfg.base_lora_rank == 8  # original untouched
    with pytest.raises(ValueError, match="base_lora_rank"):
        cfg.replace(base_lora_rank=0)
    with pytest.raises(TypeError, match="unknown field"):
        cfg.replace(nonsense=1)


def test_replace_moves_embedding_dim_with_hidden_dim():
    assert SonaConfig().replace(hidden_dim=384).embedding_dim == 384
    assert SonaConfig().replace(hidden_dim=64, embedding_dim=64).embedding_dim == 64


def test_replace_cross_field_checks():
    with pytest.raises(ValueError, match="<= hidden_dim"):
        SonaConfig().replace(hidden_dim=4)  # base_lora_rank 8 no longer fits


# ----------------------------------------------------------------------------- dicts


def test_to_dict_is_json_and_round_trips():
    cfg = SonaConfig.edge_deployment(hidden_dim=96, seed=12345)
    d = cfg.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(SonaConfig)}
    text = json.dumps(d)
    assert SonaConfig.from_dict(json.loads(text)) == cfg


def test_from_dict_rejects_unknown_keys_by_name():
    d = SonaConfig().to_dict()
    d["hiden_dim"] = 5
    d["colour"] = "blue"
    with pytest.raises(ValueError) as info:
        SonaConfig.from_dict(d)
    assert "'hiden_dim'" in str(info.value) and "'colour'" in str(info.value)
    assert "hidden_dim" in str(info.value)  # lists the valid names


def test_from_dict_explains_reference_only_keys():
    with pytest.raises(ValueError, match="set_backend"):
        SonaConfig.from_dict({"enable_simd": True})


def test_from_dict_validates():
    with pytest.raises(ValueError, match="trajectory_capacity"):
        SonaConfig.from_dict({"trajectory_capacity": 0})
    with pytest.raises(TypeError, match="hidden_dim"):
        SonaConfig.from_dict({"hidden_dim": "big"})


def test_from_dict_missing_keys_take_defaults():
    assert SonaConfig.from_dict({}) == SonaConfig()
    assert SonaConfig.from_dict({"hidden_dim": 64, "base_lora_rank": 4}).embedding_dim == 64


def test_from_dict_accepts_reference_millisecond_interval():
    cfg = SonaConfig.from_dict({"background_interval_ms": 300000})
    assert cfg.background_interval_s == 300.0
    with pytest.raises(ValueError, match="not both"):
        SonaConfig.from_dict({"background_interval_ms": 1000, "background_interval_s": 1.0})
    with pytest.raises(TypeError, match="background_interval_ms"):
        SonaConfig.from_dict({"background_interval_ms": "1000"})
    with pytest.raises(ValueError, match="background_interval_s"):
        SonaConfig.from_dict({"background_interval_ms": 0})


def test_from_dict_needs_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        SonaConfig.from_dict([("hidden_dim", 4)])  # type: ignore[arg-type]

