"""Hugging Face's GPT-2 folder <-> the lab's ``(settings, params)``.

A Hugging Face GPT-2 folder holds ``config.json`` and the weights as
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``, or an
older ``pytorch_model.bin``), usually beside ``vocab.json`` + ``merges.txt``, which
are OpenAI's ``encoder.json`` + ``vocab.bpe`` under other names.

Hugging Face's ``Conv1D`` keeps OpenAI's ``[in, out]`` kernel layout, so the mapping
is names only: ``h.0.attn.c_attn.weight`` is OpenAI's ``h0/attn/c_attn/w`` (the Flax
tree's ``h0/attn/c_attn/kernel``), ``ln_f.weight`` is ``ln_f/g``, and so on
(``weights.names``, where every renaming lives). Reading checks every name and shape against ``config.json`` as the
TF reader checks them against ``hparams.json``; NumPy and ``safetensors`` do all the
work, so neither TensorFlow nor torch is needed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from gpt2_jax.data.tokenizer import HF_BPE_FILES
from gpt2_jax.util.files import atomic_write
from gpt2_jax.weights.names import (  # noqa: F401 (BUFFER, flat_variables: importable here too)
    BLOCK_SHAPES,
    BUFFER,
    HF_PREFIX,
    HF_TO_OPENAI,
    IGNORED,
    LM_HEAD,
    expected_shapes,
    flat_variables,
    hf_name,
    hf_sizes,
    hf_tensors,
    is_hf_buffer,
    nest_variables,
)
from gpt2_jax.weights.openai import CheckpointError

CONFIG_FILE = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN)

# Options of transformers' GPT2Config that change the computation, with the value
# that GPT-2 (and this package's model) has. Absent keys take these defaults.
SAME_AS_GPT2 = {
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
    "layer_norm_epsilon": (1e-5,),
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "add_cross_attention": (False,),
}
FLOAT_TYPES = ("float16", "bfloat16", "float32", "float64")  # read, then stored as float32


def is_hf_folder(folder: str | os.PathLike) -> bool:
    """True if ``folder`` holds a Hugging Face model's config.json (its weights are
    looked for when they are read)."""
    return (Path(folder) / CONFIG_FILE).is_file()


# --------------------------------------------------------------------------- read


def read_hf_settings(folder: str | os.PathLike) -> dict:
    """``config.json`` as the lab's ``settings`` (``n_vocab, n_ctx, n_embd, n_head,
    n_layer``), after checking that it describes GPT-2's computation."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a Hugging Face model folder holds config.json")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    if config.get("model_type") != "gpt2":
        raise CheckpointError(
            f"{path}: model_type {config.get('model_type')!r}, but only "
            "'gpt2' (GPT-2's architecture) can be loaded"
        )
    missing = [k for k in HF_TO_OPENAI if k not in config]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    settings = {ours: config[theirs] for theirs, ours in HF_TO_OPENAI.items()}
    bad = [
        f"{k}={v!r}"
        for k, v in settings.items()
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0
    ]
    if bad:
        raise CheckpointError(f"{path}: {', '.join(bad)}: sizes must be positive integers")
    if settings["n_embd"] % settings["n_head"]:
        raise CheckpointError(
            f"{path}: n_embd={settings['n_embd']} is not divisible by n_head={settings['n_head']}"
        )
    n_inner = config.get("n_inner")
    if n_inner not in (None, 4 * settings["n_embd"]):
        raise CheckpointError(
            f"{path}: n_inner={n_inner}; this GPT-2 has an MLP of "
            f"4 x n_embd = {4 * settings['n_embd']}"
        )
    for key, allowed in SAME_AS_GPT2.items():
        if key in config and config[key] not in allowed:
            raise CheckpointError(
                f"{path}: {key}={config[key]!r}; this GPT-2 computes with "
                f"{allowed[0]!r}, so these weights would give other outputs"
            )
    return settings


def weights_file(folder: str | os.PathLike) -> Path:
    """The folder's weight file, in order of preference: ``model.safetensors``, the
    safetensors index, ``pytorch_model.bin``."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder}: config.json but no weights ({', '.join(WEIGHT_FILES)}); "
        "download the model's model.safetensors into it"
    )


def read_hf_tensors(folder: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """Every tensor of the folder's weight file(s) as ``(name, NumPy array)``, in file
    order (a name may repeat across shards: the caller refuses that)."""
    path = weights_file(folder)
    if path.name == SAFETENSORS:
        return _read_safetensors(path)
    if path.name == TORCH_BIN:
        return _read_torch_bin(path)
    tensors = []
    for shard in _shards(path):
        tensors += _read_safetensors(shard)
    return tensors


def shard_names(index_path: Path) -> list[str]:
    """The shard file names a safetensors index lists (each once, sorted)."""
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
        if not all(isinstance(n, str) for n in names):
            raise TypeError("its values must be file names")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"{index_path}: not a safetensors index (needs a 'weight_map' "
            f"object of tensor -> file name; {type(err).__name__}: {err})"
        ) from None
    return names


def _shards(index_path: Path) -> list[Path]:
    """The shard files an index names, each checked to be a file inside its folder."""
    folder = Path(os.path.abspath(index_path.parent))
    shards = []
    for name in shard_names(index_path):
        # the name must stay inside the folder; the file itself may be a link (as in the
        # Hugging Face cache, where snapshots link to blobs)
        shard = Path(os.path.normpath(folder / name))
        if not shard.is_relative_to(folder) or not shard.is_file():
            raise CheckpointError(f"{index_path}: shard {name!r} is not a file in {folder}")
        shards.append(shard)
    return shards


def _read_safetensors(path: Path) -> list[tuple[str, np.ndarray]]:
    from safetensors import SafetensorError, safe_open

    try:
        tensors = []
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                try:
                    tensors.append((name, f.get_tensor(name)))
                except TypeError:  # bfloat16 where NumPy has no such type: JAX's arrays do
                    with safe_open(str(path), framework="flax") as g:
                        tensors.append((name, np.asarray(g.get_tensor(name), np.float32)))
        return tensors
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{path}: cannot read it as safetensors ({err}); a truncated "
            "download? Delete it and download again"
        ) from None


def _read_torch_bin(path: Path) -> list[tuple[str, np.ndarray]]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: this folder has only PyTorch's pickle format, which "
            "needs torch (pip install torch), or convert it once to "
            "model.safetensors where torch is installed"
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        raise CheckpointError(f"{path}: cannot read it ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"{path}: not a state dict (names -> tensors) but "
            f"{type(state).__name__}; save model.state_dict()"
        )
    out = []
    for name, t in state.items():
        if not t.is_floating_point():
            raise CheckpointError(
                f"{path}: tensor {name!r} is {t.dtype}, not a floating-point type"
            )
        out.append((name, t.detach().to(torch.float32).numpy()))
    return out


def load_hf_gpt2(folder: str | os.PathLike) -> tuple[dict, dict]:
    """Read a Hugging Face GPT-2 folder into ``(settings, params)``, the same pair
    ``openai_checkpoint.load_gpt2`` returns: every tensor is named, shaped, counted and
    checked finite against ``config.json``, and stored as float32.

    The names may carry ``transformer.`` (saved from ``GPT2LMHeadModel``) or not
    (``GPT2Model``); an ``lm_head.weight`` must equal ``wte`` (GPT-2 ties them); a
    sequence classifier's ``score.weight`` is not part of GPT-2 and is left out."""
    folder = Path(folder)
    settings = read_hf_settings(folder)
    where = weights_file(folder)
    tensors = read_hf_tensors(folder)
    want = 4 + len(BLOCK_SHAPES) * settings["n_layer"]
    weights = [(n, a) for n, a in tensors if not is_hf_buffer(n) and n not in IGNORED]
    if want > 2 * len(weights) + len(BLOCK_SHAPES):  # far off: config.json is wrong, and
        # listing every name it implies could take long
        raise CheckpointError(
            f"{where}: {len(weights)} tensors, but config.json's {settings} needs {want}"
        )
    expected = expected_shapes(settings)
    by_hf = {hf_name(name): name for name in expected}
    found: dict[str, np.ndarray] = {}
    lm_head = None
    for full_name, array in weights:
        name = full_name.removeprefix(HF_PREFIX)
        if full_name == LM_HEAD:
            lm_head = array
            continue
        if name not in by_hf:
            raise CheckpointError(
                f"{where}: unexpected tensor {full_name!r} of shape "
                f"{tuple(array.shape)} for a GPT-2 with {settings}"
            )
        ours = by_hf[name]
        if ours in found:
            raise CheckpointError(f"{where}: tensor {hf_name(ours)!r} is stored twice")
        found[ours] = _checked(f"{where}: tensor {full_name!r}", array, expected[ours], settings)
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} tensor(s) missing, e.g. "
            + ", ".join(f"{hf_name(n)} {expected[n]}" for n in missing[:5])
        )
    if lm_head is not None and not np.array_equal(np.asarray(lm_head, np.float32), found["wte"]):
        raise CheckpointError(
            f"{where}: lm_head.weight differs from wte.weight; GPT-2 ties "
            "the output head to the token embedding, and so does gpt2_jax"
        )
    return settings, nest_variables(found, settings["n_layer"])


def _checked(what: str, array, shape: tuple[int, ...], settings: dict) -> np.ndarray:
    """``array`` as float32, once its shape, type and values are checked."""
    if tuple(array.shape) != shape:
        raise CheckpointError(
            f"{what} has shape {tuple(array.shape)}, expected {shape} from config.json {settings}"
        )
    if np.dtype(array.dtype).name not in FLOAT_TYPES:
        raise CheckpointError(f"{what} is {array.dtype}, not a floating-point type")
    out = np.asarray(array, np.float32)
    if not np.isfinite(out).all():
        raise CheckpointError(f"{what} holds NaN or infinite values; the file is damaged")
    return out


# --------------------------------------------------------------------------- write


def config_json(settings: dict, **extra) -> dict:
    """``config.json`` for a GPT-2 of ``settings``; ``extra`` keys are added
    (``architectures``, ``id2label``, ...)."""
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        **hf_sizes(settings),
        "n_ctx": int(settings["n_ctx"]),
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": True,
    }
    config.update(extra)
    return config


def check_new_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path, if it does not exist or is an empty folder: an export
    never mixes its files with others or overwrites a model."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; pick a new one")
    return out


def save_hf_gpt2(
    out_dir: str | os.PathLike,
    settings: dict,
    params: dict,
    *,
    bpe: tuple[Path, Path] | None = None,
    config_extra: dict | None = None,
    extra_tensors: dict[str, np.ndarray] | None = None,
    tokenizer_extra: dict | None = None,
    prefix: str = "",
) -> Path:
    """Write a Hugging Face GPT-2 folder: ``config.json``, ``model.safetensors`` (the
    lab's ``params`` under Hugging Face's names, float32), and the tokenizer files
    (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) from ``bpe``, the pair
    ``(encoder.json, vocab.bpe)`` (``tokenizer.bpe_files``). ``out_dir`` must not exist or be empty; config.json is written
    last, so a folder with it is complete."""
    from safetensors.numpy import save_file

    out = check_new_folder(out_dir)
    if any(settings[k] != np.shape(params["wte"])[i] for i, k in ((0, "n_vocab"), (1, "n_embd"))):
        raise ValueError(f"settings {settings} do not fit wte of shape {np.shape(params['wte'])}")
    out.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors(params, prefix)
    tensors.update(extra_tensors or {})
    # through util.files: safetensors alone leaves the file mode 0600, unlike its neighbours
    atomic_write(
        out / SAFETENSORS, lambda part: save_file(tensors, str(part), metadata={"format": "pt"})
    )
    if bpe is not None:
        for src, name in zip(bpe, HF_BPE_FILES):
            shutil.copyfile(src, out / name)
        tok = {
            "tokenizer_class": "GPT2Tokenizer",
            "model_max_length": int(settings["n_ctx"]),
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "add_prefix_space": False,
            **(tokenizer_extra or {}),
        }
        (out / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
    config = config_json(settings, **(config_extra or {}))
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return out
