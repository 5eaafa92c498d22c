"""A GPT-2 folder from the Hugging Face Hub, by repo id, through ``huggingface_hub``.

Only the files a GPT-2 needs are fetched (``config.json``, the safetensors weights,
``vocab.json`` + ``merges.txt``, else ``tokenizer.json``), into the library's own cache (``HF_HUB_CACHE``,
by default ``~/.cache/huggingface/hub``), so a second run reads them from there.
``revision`` pins a branch, tag or commit; offline (``offline=True``, or
``GPT2_JAX_OFFLINE`` / ``HF_HUB_OFFLINE`` set) only the cache is read. The endpoint
is the library's (``HF_ENDPOINT``) unless ``endpoint`` is given. Needs the ``hub``
extra: ``pip install 'gpt2_jax[hub]'``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .download import offline_requested
from .hf_checkpoint import CONFIG_FILE, SAFETENSORS, SAFETENSORS_INDEX
from .tokenizer import HF_BPE_FILES, HF_TOKENIZER_JSON


class HubError(RuntimeError):
    """The repo's files could not be had; the message says which file and why."""


def _hub() -> None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise HubError("--hf-repo needs the huggingface_hub package: pip install "
                       "'gpt2_jax[hub]' (or download the folder and pass --model-dir)") from None


def fetch_hf_repo(repo_id: str, *, revision: str | None = None,
                  cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                  endpoint: str | None = None) -> Path:
    """The local folder (a snapshot in the cache) holding ``repo_id``'s GPT-2 files."""
    _hub()
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError as EntryNotFoundError

    if offline is None:
        offline = offline_requested() or constants.is_offline_mode()
    revision = revision or "main"

    def get(name: str) -> Path:
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir,
                                        local_files_only=offline, endpoint=endpoint))
        except EntryNotFoundError:
            raise
        except Exception as err:  # the library raises many types; say which file, and why
            raise HubError(_why(repo_id, revision, name, err, offline)) from None

    config = get(CONFIG_FILE)
    try:
        get(SAFETENSORS)
    except EntryNotFoundError:
        try:
            index = get(SAFETENSORS_INDEX)
        except EntryNotFoundError:
            raise HubError(f"{repo_id}@{revision}: has neither {SAFETENSORS} nor "
                           f"{SAFETENSORS_INDEX}; only safetensors weights are fetched "
                           "from the Hub") from None
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise HubError(f"{index}: not a safetensors index ({err})") from None
        for shard in shards:
            get(shard)
    have = 0  # tokenizer files are optional: without them the standard GPT-2 BPE is used
    for name in HF_BPE_FILES:
        try:
            get(name)
            have += 1
        except (EntryNotFoundError, HubError):
            pass
    if have < len(HF_BPE_FILES):
        try:
            get(HF_TOKENIZER_JSON)
        except (EntryNotFoundError, HubError):
            pass
    return config.parent


def _why(repo_id: str, revision: str, name: str, err: Exception, offline: bool) -> str:
    kind = type(err).__name__
    first = (str(err).strip().splitlines() or [kind])[0]
    where = f"{repo_id}@{revision}: {name}"
    if kind == "LocalEntryNotFoundError" or (offline and "local_files_only" in str(err)):
        return (f"{where} is not in the Hugging Face cache, and offline mode downloads "
                "nothing; run once online, or unset GPT2_JAX_OFFLINE / HF_HUB_OFFLINE")
    if kind == "RepositoryNotFoundError":
        return f"{repo_id}: no such repository on the Hub (or it is private; log in first)"
    if kind == "RevisionNotFoundError":
        return f"{repo_id}: no revision {revision!r} (a branch, tag or commit hash)"
    return f"{where}: cannot be fetched ({kind}: {first})"
