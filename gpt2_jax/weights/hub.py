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

import os
from dataclasses import dataclass
from pathlib import Path

from gpt2_jax.data.tokenizer import HF_BPE_FILES, HF_TOKENIZER_JSON
from gpt2_jax.util.fetch import offline_requested
from gpt2_jax.weights.hf import CONFIG_FILE, SAFETENSORS, SAFETENSORS_INDEX, shard_names


class HubError(RuntimeError):
    """The repo's files could not be had; the message says which file and why."""


def _hub() -> None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise HubError(
            "--hf-repo needs the huggingface_hub package: pip install "
            "'gpt2_jax[hub]' (or download the folder and pass --model-dir)"
        ) from None


def fetch_hf_repo(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    endpoint: str | None = None,
) -> Path:
    """The local folder (a snapshot in the cache, named by the commit) holding
    ``repo_id``'s GPT-2 files."""
    _hub()
    from huggingface_hub import constants

    if offline is None:
        offline = offline_requested() or constants.is_offline_mode()
    repo = _Repo(repo_id, revision or "main", cache_dir, offline, endpoint)
    config = repo.need(CONFIG_FILE)
    _fetch_weights(repo)
    # tokenizer files are optional: without them the standard GPT-2 BPE is used
    if None in [repo.get(name) for name in HF_BPE_FILES]:
        repo.get(HF_TOKENIZER_JSON)
    return config.parent


@dataclass
class _Repo:
    """One revision of a Hub repository, its files fetched one by one into the cache."""

    repo_id: str
    revision: str
    cache_dir: str | os.PathLike | None
    offline: bool
    endpoint: str | None

    @property
    def where(self) -> str:
        return f"{self.repo_id}@{self.revision}"

    def need(self, name: str) -> Path:
        """The file's cached path; ``HubError`` if it cannot be had."""
        path = self.get(name, optional=False)
        assert path is not None  # get returns None only for an optional file
        return path

    def get(self, name: str, optional: bool = True) -> Path | None:
        """The file's cached path; None for an optional file the repo (or, offline, the
        cache) does not have."""
        from huggingface_hub import constants, hf_hub_download

        try:
            return Path(
                hf_hub_download(
                    self.repo_id,
                    name,
                    revision=self.revision,
                    # huggingface_hub annotates str | Path, but takes any os.PathLike
                    # (it reads cache_dir through Path(cache_dir))
                    cache_dir=self.cache_dir,  # type: ignore[arg-type]
                    local_files_only=self.offline,
                    endpoint=self.endpoint,
                )
            )
        except _absent_error():
            if optional:
                return None
            raise HubError(f"{self.where}: the repository has no {name}") from None
        except Exception as err:  # the library raises many types; say which file, and why
            if optional and self.offline and type(err).__name__ == "LocalEntryNotFoundError":
                return None
            endpoint = self.endpoint or constants.ENDPOINT
            raise HubError(_why(self.where, name, err, self.offline, endpoint)) from None


def _absent_error() -> type[Exception]:
    """The "no such file in the repository" error of either huggingface_hub version."""
    try:
        from huggingface_hub.errors import RemoteEntryNotFoundError

        return RemoteEntryNotFoundError
    except ImportError:  # before huggingface_hub 1.0
        from huggingface_hub.utils import EntryNotFoundError

        return EntryNotFoundError


def _fetch_weights(repo: _Repo) -> None:
    """``model.safetensors``, else the safetensors index and every shard it lists."""
    if repo.get(SAFETENSORS) is not None:
        return
    index = repo.get(SAFETENSORS_INDEX)
    if index is None:
        raise HubError(
            f"{repo.where}: neither {SAFETENSORS} nor {SAFETENSORS_INDEX} "
            + (
                "is in the Hugging Face cache, and offline mode downloads nothing"
                if repo.offline
                else "is in the repository; only safetensors weights are fetched from the Hub"
            )
        )
    for shard in shard_names(index):  # the loader's own reading of the index
        repo.need(shard)


def _why(where: str, name: str, err: Exception, offline: bool, endpoint: str) -> str:
    kind = type(err).__name__
    first = (str(err).strip().splitlines() or [kind])[0]
    if kind == "LocalEntryNotFoundError":
        if offline:
            return (
                f"{where}: {name} is not in the Hugging Face cache, and offline mode "
                "downloads nothing; run once online, or unset GPT2_JAX_OFFLINE / "
                "HF_HUB_OFFLINE"
            )
        return (
            f"{where}: {name} could not be fetched ({endpoint} did not answer) and is not "
            "in the Hugging Face cache; check the connection or HF_ENDPOINT"
        )
    if kind in ("RepositoryNotFoundError", "GatedRepoError"):
        return f"{where}: no such repository on the Hub (or it is private or gated; log in first)"
    if kind == "RevisionNotFoundError":
        return f"{where}: no such revision (a branch, tag or commit hash)"
    return f"{where}: {name} cannot be fetched ({kind}: {first})"
