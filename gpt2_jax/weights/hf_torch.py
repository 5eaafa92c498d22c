"""The lab's ``params`` dict as a Hugging Face ``transformers`` GPT-2 (PyTorch).

Used by the parity tests and the benchmark; needs the ``dev`` extra (torch,
transformers). No hub access: the model is built from a config and these weights.
"""

from __future__ import annotations

from gpt2_jax.model.config import GPTConfig
from gpt2_jax.weights.hf import hf_tensors


def hf_config(cfg: GPTConfig, **extra):
    import transformers

    return transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=cfg.drop_rate,
        embd_pdrop=cfg.drop_rate,
        attn_pdrop=cfg.drop_rate,
        **extra,
    )


def hf_state_dict(params: dict, prefix: str = "transformer.") -> dict:
    """Torch tensors named as in ``GPT2Model`` (``hf_checkpoint.hf_tensors``: the one
    place the names are mapped); HF's Conv1D keeps TF's [in, out] layout, so kernels go
    over without a transpose."""
    import torch

    return {name: torch.tensor(array) for name, array in hf_tensors(params, prefix).items()}


def load_into(model, state: dict) -> None:
    """``load_state_dict`` that tolerates only HF's causal-mask buffers (and, for a
    classifier, its new head) being absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = (".attn.bias", ".attn.masked_bias", "score.weight", "lm_head.weight")
    bad = [m for m in missing if not m.endswith(allowed)]
    if unexpected or bad:
        raise ValueError(f"weights do not fit the HF model: missing {bad}, unexpected {unexpected}")


def hf_lm(cfg: GPTConfig, params: dict):
    """``GPT2LMHeadModel`` with the lab's weights (head tied to wte), in eval mode."""
    import transformers

    model = transformers.GPT2LMHeadModel(hf_config(cfg))
    load_into(model, hf_state_dict(params))
    model.tie_weights()
    return model.eval()
