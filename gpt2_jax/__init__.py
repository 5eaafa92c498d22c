"""GPT-2 in JAX/Flax: load OpenAI's checkpoints, fine-tune a classifier of your texts.

from gpt2_jax import Classifier, RunConfig, DataConfig, run

report = run(RunConfig(data=DataConfig(data_file="tickets.csv", text_column="body",
                                       label_column="team")))
clf = Classifier.load(report["run_dir"])
clf.predict(["my invoice is wrong"]).labels
"""

# first: it reads the user's TF_CPP_MIN_LOG_LEVEL before jax sets its default
from gpt2_jax.util import runtime as _runtime  # noqa: F401

# isort: split
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
