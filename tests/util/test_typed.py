"""Config dataclasses check their field types at construction and name the class, the
field, the type expected and the value given; values from JSON still load."""

import dataclasses
import json
from pathlib import Path
from typing import Literal

import pytest

from gpt2_jax.finetune.config import (
    DataConfig,
    ModelConfig,
    OutputConfig,
    RunConfig,
    SpeedConfig,
)
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.util.typed import ConfigTypeError, check_field_types, fits, type_words

WRONG = [
    (TrainConfig, {"epochs": "3"}, "TrainConfig.epochs: expected int, got str '3'"),
    (TrainConfig, {"batch_size": True}, "TrainConfig.batch_size: expected int, got bool True"),
    (TrainConfig, {"lr": True}, "TrainConfig.lr: expected float, got bool True"),
    (TrainConfig, {"trainable": [1]}, "TrainConfig.trainable: expected tuple of str, got tuple"),
    (TrainConfig, {"ignore_index": 1.5}, "TrainConfig.ignore_index: expected int or None, got"),
    (DataConfig, {"train_size": "abc"}, "DataConfig.train_size: expected int or float, got str"),
    (DataConfig, {"stratify": "yes"}, "DataConfig.stratify: expected bool, got str 'yes'"),
    (DataConfig, {"labels": [1, 2]}, "DataConfig.labels: expected str, got list [1, 2]"),
    (DataConfig, {"max_length": 2.5}, "DataConfig.max_length: expected int or str, got float"),
    (ModelConfig, {"lora_rank": "8"}, "ModelConfig.lora_rank: expected int, got str '8'"),
    (ModelConfig, {"offline": 1}, "ModelConfig.offline: expected bool, got int 1"),
    (ModelConfig, {"model_dir": 3}, "ModelConfig.model_dir: expected str or None, got int 3"),
    (SpeedConfig, {"mesh": None}, "SpeedConfig.mesh: expected str, got NoneType None"),
    (SpeedConfig, {"memory_budget_gib": [8]}, "SpeedConfig.memory_budget_gib: expected float or"),
    (OutputConfig, {"keep_checkpoints": "2"}, "OutputConfig.keep_checkpoints: expected int, got"),
    (RunConfig, {"train": {"epochs": 3}}, "RunConfig.train: expected TrainConfig, got dict"),
    (GPTConfig, {"n_layers": 2.0}, "GPTConfig.n_layers: expected int, got float 2.0"),
    (GPTConfig, {"qkv_bias": "no"}, "GPTConfig.qkv_bias: expected bool, got str 'no'"),
    (GPTConfig, {"matmul_dtype": 16}, "GPTConfig.matmul_dtype: expected str or None, got int"),
]


@pytest.mark.parametrize("cls, given, message", WRONG, ids=[m.split(":")[0] for *_, m in WRONG])
def test_a_wrong_type_is_named_with_class_field_and_types(cls, given, message):
    with pytest.raises(ConfigTypeError) as caught:
        cls(**given)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)


def test_natural_forms_are_still_accepted():
    assert TrainConfig(lr=1).lr == 1  # an int where a float is expected
    assert TrainConfig(trainable=["all"]).trainable == ("all",)
    assert DataConfig(labels=("spam", "ham")).labels == "spam,ham"
    assert DataConfig(train_size=0.5, test_size="rest").test_size == "rest"
    path = DataConfig(data_file=Path("/data/texts.csv")).data_file  # a Path for a str field
    assert path == "/data/texts.csv" and type(path) is str
    assert GPTConfig(num_classes=None, matmul_dtype="bfloat16").matmul_dtype == "bfloat16"


def test_values_of_the_right_type_are_still_checked():
    with pytest.raises(ValueError, match="test_size must be a count, a fraction or 'rest'"):
        DataConfig(test_size="most")
    with pytest.raises(ValueError, match="memory_budget_gib must be 'available' or a positive"):
        SpeedConfig(memory_budget_gib="plenty")
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        TrainConfig(epochs=-1)


def test_json_round_trip_and_an_older_config():
    cfg = RunConfig(
        data=DataConfig(train_size=0.8, val_size=0.1, test_size="rest", labels="b,a"),
        train=TrainConfig(trainable=("h1/.*", "head/.*"), class_weights="a=1,b=2.5", lr=1e-3),
        speed=SpeedConfig(memory_budget_gib=6.5, prefix_dtype="bfloat16"),
    )
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.train.trainable == ("h1/.*", "head/.*")
    # an older config.json: settings added since are missing, tuples are JSON lists
    old = json.loads(json.dumps(RunConfig().to_dict()))
    del old["data"]["drop_duplicates"], old["data"]["truncate"], old["train"]["patience"]
    old["train"]["trainable"] = ["last_block", "final_norm"]
    loaded = RunConfig.from_dict(old)
    assert loaded.train.trainable == ("last_block", "final_norm")
    assert loaded.data.truncate == DataConfig().truncate
    # a damaged one names the section's class and field
    old["train"]["epochs"] = "4"
    with pytest.raises(ConfigTypeError, match=r"^TrainConfig.epochs: expected int, got str '4'"):
        RunConfig.from_dict(old)


def test_the_checker_reads_the_annotations():
    @dataclasses.dataclass
    class Example:
        mode: Literal["a", "b"] = "a"
        pair: tuple[int, str] = (1, "x")
        ratio: float = 0.5

        def __post_init__(self):
            check_field_types(self)

    Example(mode="b", pair=(2, "y"), ratio=1)
    for given, words in [
        ({"mode": "c"}, "expected one of 'a', 'b', got str 'c'"),
        ({"pair": (1, 2)}, "expected tuple (int, str), got tuple (1, 2)"),
        ({"pair": (1,)}, "expected tuple (int, str), got tuple (1,)"),
        ({"ratio": False}, "expected float, got bool False"),
    ]:
        with pytest.raises(ConfigTypeError) as caught:
            Example(**given)
        assert str(caught.value) == f"Example.{next(iter(given))}: {words}"
    assert not fits(True, Literal[1]) and fits(1, Literal[1])
    assert type_words(int | float | str) == "int or float or str"
