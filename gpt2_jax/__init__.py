"""GPT-2 in JAX/Flax: load OpenAI's checkpoints, fine-tune a classifier of your texts.

from gpt2_jax import Classifier, RunConfig, DataConfig, run

report = run(RunConfig(data=DataConfig(data_file="tickets.csv", text_column="body",
                                       label_column="team")))
clf = Classifier.load(report["run_dir"])
clf.predict(["my invoice is wrong"]).labels

The names below are imported on first use (PEP 562), so ``import gpt2_jax`` is quick
and a command loads only what it needs: ``classify`` never imports the training stack
(optax, TensorFlow).
"""

import importlib as _importlib
import typing as _typing

# first: it reads the user's TF_CPP_MIN_LOG_LEVEL before jax sets its default
from gpt2_jax.util import runtime as _runtime  # noqa: F401

# public name: the module that defines it
_WHERE = {
    "Classifier": "gpt2_jax.classifier.classifier",
    "Predictions": "gpt2_jax.classifier.classifier",
    "export_backbone": "gpt2_jax.classifier.export",
    "export_classifier": "gpt2_jax.classifier.export",
    "load_classifier": "gpt2_jax.classifier.saved",
    "ClassifierConfig": "gpt2_jax.classifier.spec",
    "get_tokenizer": "gpt2_jax.data.tokenizer",
    "DataConfig": "gpt2_jax.finetune.config",
    "ModelConfig": "gpt2_jax.finetune.config",
    "OutputConfig": "gpt2_jax.finetune.config",
    "RunConfig": "gpt2_jax.finetune.config",
    "SpeedConfig": "gpt2_jax.finetune.config",
    "load_config": "gpt2_jax.finetune.config",
    "run": "gpt2_jax.finetune.run",
    "MODEL_SIZES": "gpt2_jax.model.config",
    "GPTConfig": "gpt2_jax.model.config",
    "GPTModel": "gpt2_jax.model.gpt",
    "init_params": "gpt2_jax.model.gpt",
    "TrainConfig": "gpt2_jax.training.config",
    "Partition": "gpt2_jax.training.partition",
    "download_and_load_gpt2": "gpt2_jax.weights.download",
    "download_gpt2": "gpt2_jax.weights.download",
    "load_pretrained": "gpt2_jax.weights.pretrained",
}

__all__ = [
    "Classifier",
    "ClassifierConfig",
    "Predictions",
    "load_classifier",
    "MODEL_SIZES",
    "GPTConfig",
    "download_and_load_gpt2",
    "download_gpt2",
    "DataConfig",
    "ModelConfig",
    "OutputConfig",
    "RunConfig",
    "SpeedConfig",
    "load_config",
    "run",
    "GPTModel",
    "init_params",
    "get_tokenizer",
    "Partition",
    "TrainConfig",
    "load_pretrained",
    "export_classifier",
    "export_backbone",
]


def __getattr__(name: str) -> _typing.Any:
    """A public name's value, its module imported on first use (then kept here)."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'gpt2_jax' has no attribute {name!r}")
    value = getattr(_importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if _typing.TYPE_CHECKING:  # the same names, for type checkers and editors
    from gpt2_jax.classifier.classifier import Classifier, Predictions
    from gpt2_jax.classifier.export import export_backbone, export_classifier
    from gpt2_jax.classifier.saved import load_classifier
    from gpt2_jax.classifier.spec import ClassifierConfig
    from gpt2_jax.data.tokenizer import get_tokenizer
    from gpt2_jax.finetune.config import (
        DataConfig,
        ModelConfig,
        OutputConfig,
        RunConfig,
        SpeedConfig,
        load_config,
    )
    from gpt2_jax.finetune.run import run
    from gpt2_jax.model.config import MODEL_SIZES, GPTConfig
    from gpt2_jax.model.gpt import GPTModel, init_params
    from gpt2_jax.training.config import TrainConfig
    from gpt2_jax.training.partition import Partition
    from gpt2_jax.weights.download import download_and_load_gpt2, download_gpt2
    from gpt2_jax.weights.pretrained import load_pretrained
