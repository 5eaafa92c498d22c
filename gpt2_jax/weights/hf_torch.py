"""The lab's ``params`` dict as a Hugging Face ``transformers`` GPT-2 (PyTorch).

Used by the parity tests and the benchmark; needs the ``dev`` extra (torch,
transformers). No hub access: the model is built from a config and these weights.
"""

from __future__ import annotations

from typing import Any

from gpt2_jax.model.config import GPTConfig
from gpt2_jax.weights.names import HF_PREFIX, IGNORED, LM_HEAD, hf_sizes, hf_tensors, is_hf_buffer


def hf_config(cfg: GPTConfig, **extra):
    import transformers

    sizes: dict[str, Any] = hf_sizes(cfg.to_settings())  # vocab_size, n_positions, ...
    return transformers.GPT2Config(
        **sizes,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=cfg.drop_rate,
        embd_pdrop=cfg.drop_rate,
        attn_pdrop=cfg.drop_rate,
        **extra,
    )


def hf_state_dict(params: dict, prefix: str = HF_PREFIX) -> dict:
    """Torch tensors named as in ``GPT2Model`` (``names.hf_tensors``: every renaming
    lives in ``weights.names``); HF's Conv1D keeps TF's [in, out] layout, so kernels go
    over without a transpose."""
    import torch

    return {name: torch.tensor(array) for name, array in hf_tensors(params, prefix).items()}


def load_into(model, state: dict) -> None:
    """``load_state_dict`` that tolerates only HF's causal-mask buffers (and, for a
    classifier, its new head) being absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [m for m in missing if not (is_hf_buffer(m) or m in (LM_HEAD, *IGNORED))]
    if unexpected or bad:
        raise ValueError(f"weights do not fit the HF model: missing {bad}, unexpected {unexpected}")


def hf_lm(cfg: GPTConfig, params: dict):
    """``GPT2LMHeadModel`` with the lab's weights (head tied to wte), in eval mode."""
    import transformers

    model = transformers.GPT2LMHeadModel(hf_config(cfg))
    load_into(model, hf_state_dict(params))
    model.tie_weights()
    return model.eval()
