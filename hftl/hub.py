"""Share a finished run: push it to the Hugging Face Hub.

A push is one commit made with `huggingface_hub` (`create_repo`, then `create_commit` with every file), using
the usual token sources (the `token` argument, `HF_TOKEN`, the login saved by `hf auth login`) and the
endpoint in `HF_ENDPOINT`. It never changes the run folder: the card rendered for the repository, the
`adapter_config.json` naming the base model for the Hub and any merged weights are staged in a temporary
folder. When the push fails for a reason the user can fix (offline, no token, refused), `HubError` says
what to do, and the push can simply be retried with `hftl push`.
"""

from __future__ import annotations

import fnmatch
import logging
import tempfile
from pathlib import Path

from hftl.card import adapter_config_for_hub, render_card
from hftl.errors import HubError
from hftl.export import export_merged
from hftl.run_dir import RunDir
from hftl.tasks import recipe_for_run

logger = logging.getLogger(__name__)

MODES = ("auto", "adapter", "merged")
#: model files of an earlier push that a new push removes when it does not replace them (e.g. an
#: adapter_config.json left over from an adapter push would make transformers load a merged push as an adapter)
MODEL_FILES = ("adapter_config.json", "adapter_model.safetensors", "model.safetensors", "model-*.safetensors",
               "model.safetensors.index.json", "config.json", "*.bin")


def push_variant(run_dir: Path, mode: str) -> str:
    """What a push sends: `adapter` (LoRA weights only), `merged` (LoRA merged in) or `full` (the model as trained)."""
    if mode not in MODES:
        raise HubError(f"mode must be one of {', '.join(MODES)}, got '{mode}'.")
    if not RunDir(run_dir).is_adapter:
        if mode == "adapter":
            raise HubError(f"{run_dir} holds no LoRA adapter (no adapter_config.json): push the whole model, "
                           "without --adapter-only.")
        return "full"  # a full or frozen run: merged and auto are the model as trained
    return "merged" if mode == "merged" else "adapter"


def _ignored(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(relative.split("/")[0], pattern)
               for pattern in RunDir.PUSH_IGNORE)


def files_to_push(folder: Path) -> dict[str, Path]:
    """path in the repository -> local file, for every file of `folder` that a push sends."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not _ignored(relative):
            files[relative] = path
    return files


def _hub_error(err: Exception, run_dir: Path, repo_id: str) -> HubError | None:
    """A `HubError` saying what went wrong and what to do, or None for errors that are not the user's to fix."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    retry = f" Nothing in {run_dir} was changed; push it again with: hftl push {run_dir} --repo-id {repo_id}"
    endpoint = constants.ENDPOINT
    if isinstance(err, OfflineModeIsEnabled):
        return HubError("offline mode is on (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE to push." + retry)
    if isinstance(err, HfHubHTTPError):
        status = getattr(err.response, "status_code", None)
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if status == 401:
            return HubError(f"{endpoint} refused the token (401: invalid or expired). Log in again with "
                            "`hf auth login`, or set HF_TOKEN to a token with write access." + retry)
        if status == 403:
            return HubError(f"the token may not write to '{repo_id}' (403). Use a token with write access to that "
                            "namespace (a fine-grained token needs 'write' on it), or push to your own namespace." + retry)
        return HubError(f"{endpoint} refused the push ({status}): {detail}." + retry)
    network_module = type(err).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")
    if isinstance(err, (ConnectionError, TimeoutError)) or network_module:
        return HubError(f"could not reach the Hub at {endpoint} ({type(err).__name__}: {err}). Check your network "
                        "connection, proxy settings and HF_ENDPOINT." + retry)
    return None


def _token(token: str | None, run_dir: Path, repo_id: str) -> str:
    from huggingface_hub import constants, get_token

    retry = f" Nothing in {run_dir} was changed; then run: hftl push {run_dir} --repo-id {repo_id}"
    if constants.HF_HUB_OFFLINE:
        raise HubError("offline mode is on (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE to push." + retry)
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token found: log in with `hf auth login`, or set HF_TOKEN to a token with "
                       "write access (https://huggingface.co/settings/tokens)." + retry)
    return token


def push_run(run_dir: str | Path, repo_id: str | None = None, private: bool = False, mode: str = "auto",
             token: str | None = None, commit_message: str | None = None, license: str | None = None,
             trust_remote_code: bool = False, allow_pickle: bool = False) -> str:
    """Push a finished run (model, processor, card, figures, run records) to the Hub in one commit.

    Args:
        run_dir (`str` or `Path`): a finished hftl run.
        repo_id (`str`, *optional*): `user/name` or `org/name` (default: the run's `hub.repo_id`).
        private (`bool`, *optional*, defaults to `False`): create the repository as private.
        mode (`str`, *optional*, defaults to `"auto"`): for LoRA runs, `adapter` (the adapter weights only;
            `auto` does the same) or `merged` (a plain transformers model, adapter merged in). Full and frozen
            runs always push the model as trained.
        token (`str`, *optional*): a Hub token; default `HF_TOKEN`, then the saved login. Never written anywhere.
        commit_message (`str`, *optional*): the commit's title.
        license (`str`, *optional*): the card's license (default: `hub.license`, else the base model's).
        trust_remote_code, allow_pickle (`bool`, *optional*, default `False`): for a merged push, which loads the
            base checkpoint (see `hftl.load`); never read from the run folder.

    Returns:
        `str`: the URL of the commit.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    run_dir = Path(run_dir)
    recipe = recipe_for_run(run_dir)
    config = recipe.config
    repo_id = repo_id or config.hub.repo_id
    if not repo_id:
        raise HubError("no repository given: pass --repo-id your-name/model-name (or set hub.repo_id in the config).")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"repo id '{repo_id}' is not valid: {err} Use 'user/name' or 'org/name'.") from None
    variant = push_variant(run_dir, mode)
    token = _token(token, run_dir, repo_id)  # before any heavy work

    with tempfile.TemporaryDirectory(prefix="hftl-push-") as tmp:
        staging = Path(tmp)
        source = (export_merged(run_dir, staging / "model", card=False, trust_remote_code=trust_remote_code,
                                allow_pickle=allow_pickle) if variant == "merged" else run_dir)
        files = {**files_to_push(source),  # the run's records as saved in the run folder, also for a merged push
                 **{name: run_dir / name for name in (RunDir.CONFIG, *RunDir.RECORDS) if (run_dir / name).is_file()}}
        card = render_card(run_dir, repo_id=repo_id, variant=variant, license=license, out_dir=staging / "card",
                           recipe=recipe)
        files.update(files_to_push(card.parent))
        contents = {path: str(local) for path, local in files.items()}
        if variant == "adapter":
            contents["adapter_config.json"] = adapter_config_for_hub(run_dir, config)
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content) for path, content in contents.items()]
        api = HfApi(token=token)
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True)
            stale = [path for path in api.list_repo_files(repo.repo_id)
                     if path not in contents and any(fnmatch.fnmatch(path, p) for p in MODEL_FILES)]
            operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
            commit = api.create_commit(repo.repo_id, operations,
                                       commit_message=commit_message or f"Upload {config.task} model ({variant}) with hftl")
        except Exception as err:
            hub_error = _hub_error(err, run_dir, repo_id)
            if hub_error is None:
                raise
            raise hub_error from None
    logger.info("pushed %s (%s) to %s", run_dir, variant, commit.commit_url)
    return commit.commit_url
