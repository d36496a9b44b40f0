"""Sparse autoencoders in sae_lens format: where an extraction's SAE comes from, and checks that it fits.

An extraction reads its SAE through one protocol, :class:`SAESource`: what identifies it (``digest``), its
shape and where it reads the model (``d_sae``, ``hook_name``, ``context_size``, ``model_name``), and
``load()`` for the sae_lens SAE itself. Two sources implement it: :class:`SAEHandle`, a sae_lens folder read
lazily (a feature-cache hit never loads the weights, nor sae_lens), and :class:`LoadedSAE`, an SAE in memory.
:func:`as_sae_source` turns whatever a caller passes (either, or a bare sae_lens SAE) into a source, so no
caller branches on the kind of SAE.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from finsae._io import write_json
from finsae._paths import cache_dir
from finsae.errors import DataError, ProviderError
from finsae.extract.identity import sae_files_digest, sae_hash
from finsae.extract.model import check_hub

if TYPE_CHECKING:  # the typed model/SAE boundary; sae_lens and TransformerLens load lazily at run time
    import torch
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

#: The SAE shipped with the package (trained by ``finsae train-sae`` on the bundled 2017 descriptions).
DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "sae" / "gemma-3-270m-l6-4096"


class SAESource(Protocol):
    """Where an extraction's SAE comes from (see the module docstring).

    ``digest`` is the SAE's identity in feature-cache keys (:func:`finsae.extract.identity.sae_hash` of the
    loaded SAE), ``dtype_name`` the torch dtype its weights are read in (``"torch.float32"``; also part of the
    key), ``location`` a name for messages. ``on_device(device)`` is the same SAE read on ``device`` (called
    in a Ray worker, which chooses its own device)."""

    @property
    def digest(self) -> str: ...

    @property
    def d_sae(self) -> int: ...

    @property
    def hook_name(self) -> str | None: ...

    @property
    def context_size(self) -> int | None: ...

    @property
    def model_name(self) -> str | None: ...

    @property
    def dtype_name(self) -> str: ...

    @property
    def location(self) -> str: ...

    def load(self) -> SAE: ...

    def on_device(self, device: str) -> SAESource: ...


def load_sae(source: str | Path, sae_id: str | None = None, device: str = "cpu",
             dtype: str | None = None) -> SAE:
    """Load a sae_lens SAE: a directory with ``cfg.json`` + ``sae_weights.safetensors``, or, with ``sae_id``,
    a pretrained release from the model hub (``SAE.from_pretrained(release, sae_id)``)."""
    from sae_lens import SAE  # heavy optional import (the 'llm' extra): only when an SAE is really loaded

    path = Path(source)
    if sae_id is None:
        if not (path / "cfg.json").is_file():
            raise DataError(f"no sae_lens SAE in {path}: expected cfg.json and sae_weights.safetensors "
                            "(or pass a hub release with sae_id)")
        try:
            sae = SAE.load_from_disk(str(path), device=device, dtype=dtype) if dtype else \
                SAE.load_from_disk(str(path), device=device)
        except Exception as exc:
            raise DataError(f"cannot load the SAE in {path}: {exc}") from exc
    else:
        check_hub(f"SAE release {source!r} id {sae_id!r}")
        try:
            sae = SAE.from_pretrained(str(source), sae_id, device=device)
        except Exception as exc:
            raise ProviderError(f"cannot load SAE {source!r}/{sae_id!r} from the hub: {exc}") from exc
    sae.eval()
    check_finite_weights(sae, str(source) if sae_id is None else f"{source}/{sae_id}")
    return sae


def check_finite_weights(sae: SAE, where: str) -> None:
    """Raise :class:`DataError` naming the first tensor of ``sae`` with a NaN or infinite entry."""
    import torch  # heavy: only where weights are in memory anyway

    for name, tensor in sae.state_dict().items():
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DataError(f"the SAE {where} has {bad} NaN or infinite value(s) in {name}: its features "
                            "would be NaN; retrain it or use another SAE")


def _base_name(name: object) -> str:
    """``google/gemma-3-270m@<hash>`` -> ``gemma-3-270m``: the model name without organisation or version."""
    return str(name).split("@")[0].rstrip("/").split("/")[-1].strip().lower()


def check_sae_model(model_id: str, sae_model_name: str | None, where: str) -> None:
    """Raise :class:`DataError` when the SAE's ``metadata.model_name`` names another model than ``model_id``
    (compared without organisation and version: ``google/gemma-3-270m@abc`` matches ``gemma-3-270m``); an SAE
    that names no model is not checked. Called before any model is loaded."""
    if not sae_model_name:
        return
    if _base_name(sae_model_name) != _base_name(model_id):
        raise DataError(f"the SAE {where} was trained on model {sae_model_name!r} (metadata.model_name), not "
                        f"on {model_id!r}: its latents would read activations of another model; pass the "
                        "matching model or SAE")


def check_compatible(model: HookedTransformer, sae: SAE) -> str:
    """The SAE's hook name, after checking that it exists in ``model`` and that ``d_in`` equals the width of
    the activation there. Raises :class:`DataError` before any forward pass otherwise."""
    hook = getattr(sae.cfg.metadata, "hook_name", None)
    if not hook:
        raise DataError("the SAE's cfg.json names no hook (metadata.hook_name): cannot tell where it reads "
                        "the model")
    if hook not in model.hook_dict:
        raise DataError(f"the SAE reads hook {hook!r}, which model {model.cfg.model_name!r} does not have "
                        f"(it has {model.cfg.n_layers} layers)")
    width = model.cfg.d_model if "resid" in hook or "mlp_out" in hook or "attn_out" in hook else None
    if width is not None and int(sae.cfg.d_in) != int(width):
        raise DataError(f"SAE/model mismatch: the SAE expects d_in={sae.cfg.d_in} at {hook!r}, but model "
                        f"{model.cfg.model_name!r} has d_model={width}")
    return hook


class SAEHandle:
    """A sae_lens SAE folder as an :class:`SAESource`, read lazily: its shape and hook come from ``cfg.json``;
    the weights (and sae_lens itself) are loaded only by the first ``load()``, so a feature-cache hit never
    loads them.

    ``digest`` is computed once per distinct folder content and dtype, and remembered under
    ``<finsae cache>/sae_digests/<sae_files_digest>.json``. A handle pickles as its folder, dtype and device
    (a Ray worker reads the weights itself).
    """

    def __init__(self, path: str | Path, dtype: str = "float32", device: str = "cpu") -> None:
        self.path, self.dtype, self.device = Path(path), dtype, device
        cfg_path = self.path / "cfg.json"
        if not cfg_path.is_file() or not (self.path / "sae_weights.safetensors").is_file():
            raise DataError(f"no sae_lens SAE in {self.path}: expected cfg.json and sae_weights.safetensors")
        try:
            self.cfg_dict: dict[str, Any] = json.loads(cfg_path.read_text())
            self.d_sae = int(self.cfg_dict["d_sae"])
            self.d_in = int(self.cfg_dict["d_in"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{cfg_path} is not a sae_lens config: {exc}") from None
        meta = self.cfg_dict.get("metadata") or {}
        self.hook_name: str | None = meta.get("hook_name") or self.cfg_dict.get("hook_name")
        self.model_name: str | None = meta.get("model_name") or self.cfg_dict.get("model_name")
        self.context_size: int | None = meta.get("context_size") or self.cfg_dict.get("context_size")
        self._sae: SAE | None = None
        self._digest: str | None = None

    @property
    def dtype_name(self) -> str:
        return f"torch.{self.dtype}"

    @property
    def location(self) -> str:
        return str(self.path)

    def load(self) -> SAE:
        """The sae_lens SAE, loaded on the first call."""
        if self._sae is None:
            self._sae = load_sae(self.path, dtype=self.dtype, device=self.device)
        return self._sae

    @property
    def sae(self) -> SAE:
        """The loaded SAE (:meth:`load`)."""
        return self.load()

    def on_device(self, device: str) -> SAEHandle:
        return self if device == self.device else SAEHandle(self.path, dtype=self.dtype, device=device)

    def files_digest(self) -> str:
        return sae_files_digest(self.path, self.dtype)

    @property
    def digest(self) -> str:
        if self._digest is None:
            memo = cache_dir() / "sae_digests" / f"{self.files_digest()}.json"
            try:
                self._digest = str(json.loads(memo.read_text())["digest"])
            except (OSError, ValueError, KeyError):
                self._digest = sae_hash(self.load())
                try:
                    write_json({"digest": self._digest, "path": str(self.path)}, memo)
                except OSError as exc:
                    logger.warning("cannot remember the SAE digest in %s: %s", memo, exc)
        return self._digest

    def __reduce__(self) -> tuple[type[SAEHandle], tuple[str, str, str]]:
        return SAEHandle, (str(self.path), self.dtype, self.device)

    def __repr__(self) -> str:
        return (f"SAEHandle({str(self.path)!r}, d_sae={self.d_sae}, hook={self.hook_name!r}, "
                f"loaded={self._sae is not None})")


class LoadedSAE:
    """A sae_lens SAE already in memory as an :class:`SAESource` (its digest is computed on first use)."""

    def __init__(self, sae: SAE) -> None:
        self.sae = sae
        meta = sae.cfg.metadata
        self.d_sae = int(sae.cfg.d_sae)
        self.hook_name: str | None = getattr(meta, "hook_name", None)
        self.context_size: int | None = getattr(meta, "context_size", None)
        self.model_name: str | None = getattr(meta, "model_name", None)
        self._digest: str | None = None

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = sae_hash(self.sae)
        return self._digest

    @property
    def dtype_name(self) -> str:
        return str(next(self.sae.parameters()).dtype)

    @property
    def location(self) -> str:
        return "given"

    def load(self) -> SAE:
        return self.sae

    def on_device(self, device: str) -> LoadedSAE:
        return self  # an object made elsewhere stays as it was made

    def __repr__(self) -> str:
        return f"LoadedSAE(d_sae={self.d_sae}, hook={self.hook_name!r})"


def as_sae_source(sae: SAESource | SAE) -> SAESource:
    """``sae`` as an :class:`SAESource`: a source as it is, a bare sae_lens SAE wrapped in :class:`LoadedSAE`.
    A source is recognised by the protocol's methods on its class, ``load`` and ``on_device`` (never by
    reading ``digest``, which may load weights); a sae_lens SAE has neither."""
    kind = type(sae)
    if callable(getattr(kind, "load", None)) and callable(getattr(kind, "on_device", None)):
        return sae
    return LoadedSAE(sae)


def _hooked(module: Any) -> bool:
    """Whether a forward or backward hook is attached to ``module`` or any of its submodules (or globally)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in module.modules())


class TopKEncoder:
    """``sae.encode(x)`` of a sae_lens TopK SAE, the same floats with less work, for extraction's inner loop.

    sae_lens' ``TopKSAE.encode`` computes ``hidden_pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc``,
    multiplies it by ``W_dec.norm(dim=-1)`` where ``rescale_acts_by_decoder_norm`` (recomputing the norm on
    every call), then ``topk(hidden_pre, k, sorted=False)``, ReLU of the values, and scatters them into a new
    zero tensor. This does the same operations in the same order on the same operands, so its output is
    equal bit for bit (tested against ``sae.encode``), but computes the decoder norm and the input bias once,
    adds and rescales in place, and scatters the top ``k`` back into the ``hidden_pre`` buffer after zeroing
    it instead of allocating a second dense tensor: about half the time of ``sae.encode`` on this CPU
    (``benchmarks/extract_throughput.py``). ``mask`` (``x``'s leading shape, bool) multiplies the output in
    place, as ``encode(x) * mask[..., None]`` would.

    Only a plain TopK SAE qualifies (:meth:`supports`): the exact sae_lens ``TopKSAE.encode``, a dense
    ``TopK`` activation, no activation normalisation or input reshaping, no hooks attached. Anything else,
    and a ``TopKEncoder`` built for it, goes through ``sae.encode`` unchanged. The weights are read when the
    encoder is built: build a new one after changing them.
    """

    def __init__(self, sae: SAE) -> None:
        self.sae = sae
        self.fast = self.supports(sae)
        if self.fast:
            self.k = int(sae.activation_fn.k)
            self.bias = sae.b_dec * sae.cfg.apply_b_dec_to_input
            self.scale = sae.W_dec.norm(dim=-1) if sae.cfg.rescale_acts_by_decoder_norm else None

    @staticmethod
    def supports(sae: SAE) -> bool:
        """Whether ``sae`` is a plain sae_lens TopK SAE whose ``encode`` :class:`TopKEncoder` reproduces."""
        try:
            from sae_lens.saes.topk_sae import TopK, TopKSAE
        except ImportError:  # pragma: no cover - sae_lens moved its classes: use sae.encode
            return False
        cfg = sae.cfg
        return (isinstance(sae, TopKSAE) and type(sae).encode is TopKSAE.encode
                and type(sae).process_sae_in is TopKSAE.process_sae_in
                and type(sae.activation_fn) is TopK and not sae.activation_fn.use_sparse_activations
                and getattr(cfg, "normalize_activations", None) == "none"
                and getattr(cfg, "reshape_activations", "none") == "none"
                and not getattr(sae, "hook_z_reshaping_mode", False)
                and not _hooked(sae) and not sae.training)

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The SAE's latent activations of ``x`` (``[..., d_in]``) in float32, times ``mask[..., None]``."""
        import torch

        if not self.fast:
            out = self.sae.encode(x).float()
            return out if mask is None else out * mask[..., None]
        sae_in = x.to(self.sae.dtype)
        if self.sae.reshape_fn_in(sae_in) is not sae_in or \
                self.sae.run_time_activation_norm_fn_in(sae_in) is not sae_in:  # pragma: no cover
            raise DataError("TopKEncoder: the SAE reshapes or normalises its input; use sae.encode")
        hidden = (sae_in - self.bias) @ self.sae.W_enc
        hidden.add_(self.sae.b_enc)
        if self.scale is not None:
            hidden.mul_(self.scale)
        values, indices = torch.topk(hidden, k=self.k, dim=-1, sorted=False)
        values.relu_()
        hidden.zero_()
        hidden.scatter_(-1, indices, values)
        out = hidden.float()
        if mask is not None:
            out.mul_(mask[..., None])
        return out
