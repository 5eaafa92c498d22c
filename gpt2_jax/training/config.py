"""What training does: the one TrainConfig (each field a flag) and the choices it offers."""

from __future__ import annotations

import dataclasses
import math

from gpt2_jax.training.decisions import check_target
from gpt2_jax.training.loss import parse_class_weights
from gpt2_jax.training.partition import TRAINABLE_PRESETS, resolve_trainable
from gpt2_jax.util.typed import check_field_types

# Words accepted among --trainable patterns; anything else is a regular expression.


LR_SCHEDULES = ("constant", "linear", "cosine")


SELECT_BY = ("last", "val_loss", "val_accuracy", "val_macro_f1")
# several labels per text (--multi-label) score these too (training.multilabel.SCORES)
SELECT_BY_MULTI_LABEL = ("val_micro_f1", "val_subset_accuracy", "val_hamming_loss")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training policy: what trains, how, for how long."""

    batch_size: int = dataclasses.field(default=16, metadata={"help": "examples per step"})
    epochs: int = dataclasses.field(default=4, metadata={"help": "passes over the training split"})
    lr: float = dataclasses.field(default=5e-5, metadata={"help": "AdamW learning rate"})
    weight_decay: float = dataclasses.field(default=0.1, metadata={"help": "AdamW weight decay"})
    seed: int = dataclasses.field(
        default=123,
        metadata={"help": "shuffle, head init, batch order, dropout; same seed, same results"},
    )
    trainable: tuple[str, ...] = dataclasses.field(
        default=("auto",),
        metadata={
            "help": "what trains: a preset (" + ", ".join(TRAINABLE_PRESETS) + ") or regular "
            "expressions over parameter names such as 'h11/.*' (repeat the flag)",
            "metavar": "PRESET|REGEX",
        },
    )
    class_weights: str = dataclasses.field(
        default="balanced",
        metadata={
            "help": "balanced: n/(k*count_c) from the training labels; none; or per class by "
            "name, e.g. 'ham=1,spam=3.5'",
            "metavar": "balanced|none|NAME=W,...",
        },
    )
    accumulation_steps: int = dataclasses.field(
        default=1,
        metadata={
            "metavar": "K",
            "help": "average the gradients of this many batches per optimizer update (each "
            "batch's loss is its own weighted mean, as in the book); batches left over at the "
            "end of an epoch count towards the next epoch's first update",
        },
    )
    lr_schedule: str = dataclasses.field(
        default="constant",
        metadata={
            "choices": LR_SCHEDULES,
            "help": "learning rate after warm-up: constant, or decaying "
            "to 0 at the last update (linear, cosine)",
        },
    )
    warmup_steps: int = dataclasses.field(
        default=0,
        metadata={
            "metavar": "N",
            "help": "optimizer updates with the learning rate rising linearly from 0",
        },
    )
    clip_norm: float = dataclasses.field(
        default=0.0,
        metadata={"metavar": "NORM", "help": "clip gradients to this global norm (0: no clipping)"},
    )
    select_by: str = dataclasses.field(
        default="last",
        metadata={
            "choices": SELECT_BY + SELECT_BY_MULTI_LABEL,
            "help": "which epoch's weights the classifier keeps: the last, "
            "or the best on the validation split by this metric (the test split never chooses)",
        },
    )
    ignore_index: int | None = dataclasses.field(
        default=None,
        metadata={
            "parse": int,
            "metavar": "ID",
            "help": "leave examples of this class id out of the "
            "loss (the book's row 18 passes 50256, which is no class id: no effect)",
        },
    )
    patience: int = dataclasses.field(
        default=0,
        metadata={
            "metavar": "EPOCHS",
            "help": "with --select-by: stop after this many epochs without a better validation "
            "metric (0: train every epoch)",
        },
    )

    calibrate: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "after training, fit a temperature on the validation split so that the "
            "probabilities are calibrated (it never changes which class is most probable); "
            "saved with the classifier and applied when it predicts"
        },
    )
    decision_threshold: str | None = dataclasses.field(
        default=None,
        metadata={
            "metavar": "TARGET",
            "help": "two classes: predict the second class only when its probability reaches "
            "a threshold chosen on the validation split for TARGET: f1, precision=P or "
            "recall=R (e.g. precision=0.99); saved with the classifier",
        },
    )
    thresholds: str = dataclasses.field(
        default="f1",
        metadata={
            "metavar": "f1|P",
            "help": "several labels per text: each label's threshold on its probability, "
            "chosen on the validation split for the highest F1 (f1), or one fixed "
            "probability for all (e.g. 0.5); saved with the classifier",
        },
    )

    def __post_init__(self):
        # the Python API's natural forms: one preset or pattern, weights as a dict
        if isinstance(self.trainable, str):
            object.__setattr__(self, "trainable", (self.trainable,))
        elif isinstance(self.trainable, list):
            object.__setattr__(self, "trainable", tuple(self.trainable))
        if isinstance(self.class_weights, dict):
            object.__setattr__(
                self,
                "class_weights",
                ",".join(f"{name}={weight}" for name, weight in self.class_weights.items()),
            )
        check_field_types(self)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if not self.trainable:
            raise ValueError("trainable needs at least one preset or pattern")
        resolve_trainable(self.trainable, 1)  # raises on an invalid regular expression
        if self.class_weights not in ("balanced", "none"):
            parse_class_weights(self.class_weights)  # raises on a malformed spec
        if self.accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be >= 1, got {self.accumulation_steps}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm >= 0):
            raise ValueError(f"clip_norm must be a number >= 0 (0: off), got {self.clip_norm}")
        if self.select_by not in SELECT_BY + SELECT_BY_MULTI_LABEL:
            raise ValueError(
                f"select_by must be one of {SELECT_BY + SELECT_BY_MULTI_LABEL}, "
                f"got {self.select_by!r}"
            )
        fixed_threshold(self.thresholds)  # raises on anything but f1 or a probability
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.decision_threshold is not None:
            check_target(self.decision_threshold)
        if self.patience and self.select_by == "last":
            raise ValueError(
                "patience needs a validation metric to watch: set select_by "
                "(--select-by val_loss, val_accuracy or val_macro_f1)"
            )


def fixed_threshold(thresholds: str) -> float | None:
    """``--thresholds``: None for ``f1`` (chosen on validation), else the fixed probability."""
    if thresholds == "f1":
        return None
    try:
        value = float(thresholds)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise ValueError(
            f"thresholds must be 'f1' or a probability strictly between 0 and 1, got {thresholds!r}"
        )
    return value
