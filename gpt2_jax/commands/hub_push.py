"""An exported folder up to the Hugging Face Hub (``experiments.export --push-to-hub``).

``push_folder(folder, repo_id, private=...)`` creates the model repository (an existing
one is kept, with its visibility) and uploads the folder as one commit through
``huggingface_hub`` (``HfApi.create_repo`` + ``upload_folder``). The endpoint is
``HF_ENDPOINT`` (read when the push starts, so a mirror or a local stand-in works), the
token ``HF_TOKEN`` or the one ``hf auth login`` saved. ``huggingface_hub`` is imported
only here, and only for a push.
"""

from __future__ import annotations

import os
from pathlib import Path

INSTALL = "--push-to-hub needs huggingface_hub: pip install gpt2_jax[hub]"


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
) -> str:
    """Upload ``folder`` to model repo ``repo_id``; the commit's URL. Any failure is one
    RuntimeError line naming the repository and what to do."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ImportError(INSTALL) from None
    check_repo_id(repo_id)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)  # token None: HF_TOKEN, else the saved login
    where = f"--push-to-hub {repo_id} ({api.endpoint})"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=str(Path(folder)),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"gpt2_jax export of {Path(folder).name}",
        )
    except Exception as err:  # the library's HTTP, token and connection errors alike
        raise RuntimeError(f"{where}: {_one_line(err)}{_hint(err)}") from None
    return str(commit.commit_url)


def check_repo_id(repo_id: str) -> None:
    """A ValueError unless ``repo_id`` reads OWNER/NAME."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"--push-to-hub {repo_id!r}: name the repository as OWNER/NAME")


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _hint(err: Exception) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403) or "token" in str(err).lower():
        return "; set HF_TOKEN to a token with write access (or run `hf auth login`)"
    return ""
