"""Sparse autoencoders in sae_lens format: load from disk or the hub, and check they fit the model."""

from __future__ import annotations

import logging
from pathlib import Path

from finsae.errors import DataError, ProviderError

logger = logging.getLogger(__name__)

#: The SAE shipped with the package (trained by ``finsae train-sae`` on the bundled 2017 descriptions).
DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "sae" / "gemma-3-270m-l3-2048"


def load_sae(source: str | Path, sae_id: str | None = None, device: str = "cpu", dtype: str | None = None):
    """Load a sae_lens SAE: a directory with ``cfg.json`` + ``sae_weights.safetensors``, or, with ``sae_id``, a
    pretrained release from the model hub (``SAE.from_pretrained(release, sae_id)``)."""
    from sae_lens import SAE

    path = Path(source)
    if sae_id is None:
        if not (path / "cfg.json").is_file():
            raise DataError(f"no sae_lens SAE in {path}: expected cfg.json and sae_weights.safetensors "
                            "(or pass a hub release with sae_id)")
        try:
            sae = SAE.load_from_disk(str(path), device=device, dtype=dtype) if dtype else SAE.load_from_disk(str(path), device=device)
        except Exception as exc:
            raise DataError(f"cannot load the SAE in {path}: {exc}") from exc
    else:
        from finsae.extract.model import check_hub

        check_hub(f"SAE release {source!r} id {sae_id!r}")
        try:
            sae = SAE.from_pretrained(str(source), sae_id, device=device)
        except Exception as exc:
            raise ProviderError(f"cannot load SAE {source!r}/{sae_id!r} from the hub: {exc}") from exc
    sae.eval()
    check_finite_weights(sae, str(source) if sae_id is None else f"{source}/{sae_id}")
    return sae


def check_finite_weights(sae, where: str) -> None:
    """Raise :class:`DataError` naming the first tensor of ``sae`` with a NaN or infinite entry."""
    import torch

    for name, tensor in sae.state_dict().items():
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DataError(f"the SAE {where} has {bad} NaN or infinite value(s) in {name}: its features would be NaN; "
                            "retrain it or use another SAE")


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
        raise DataError(f"the SAE {where} was trained on model {sae_model_name!r} (metadata.model_name), not on "
                        f"{model_id!r}: its latents would read activations of another model; pass the matching "
                        "model or SAE")


def check_compatible(model, sae) -> str:
    """The SAE's hook name, after checking that it exists in ``model`` and that ``d_in`` equals the width of
    the activation there. Raises :class:`DataError` before any forward pass otherwise."""
    hook = getattr(sae.cfg.metadata, "hook_name", None)
    if not hook:
        raise DataError("the SAE's cfg.json names no hook (metadata.hook_name): cannot tell where it reads the model")
    if hook not in model.hook_dict:
        raise DataError(f"the SAE reads hook {hook!r}, which model {model.cfg.model_name!r} does not have "
                        f"(it has {model.cfg.n_layers} layers)")
    width = model.cfg.d_model if "resid" in hook or "mlp_out" in hook or "attn_out" in hook else None
    if width is not None and int(sae.cfg.d_in) != int(width):
        raise DataError(f"SAE/model mismatch: the SAE expects d_in={sae.cfg.d_in} at {hook!r}, but model "
                        f"{model.cfg.model_name!r} has d_model={width}")
    return hook


class SAEHandle:
    """A sae_lens SAE directory, read lazily: its shape and hook come from ``cfg.json``; the weights (and
    sae_lens itself) are loaded only when ``sae`` is first used, so a feature-cache hit never loads them.

    ``digest`` is the feature-cache identity of the SAE (:func:`finsae.extract.cache.sae_hash` of the loaded SAE).
    It is computed once per distinct directory content and remembered under
    ``<finsae cache>/sae_digests/<sha256 of cfg.json and weights>.json``.
    """

    def __init__(self, path: str | Path, dtype: str = "float32", device: str = "cpu") -> None:
        import json

        self.path, self.dtype, self.device = Path(path), dtype, device
        cfg_path = self.path / "cfg.json"
        if not cfg_path.is_file() or not (self.path / "sae_weights.safetensors").is_file():
            raise DataError(f"no sae_lens SAE in {self.path}: expected cfg.json and sae_weights.safetensors")
        try:
            self.cfg_dict = json.loads(cfg_path.read_text())
            self.d_sae = int(self.cfg_dict["d_sae"])
            self.d_in = int(self.cfg_dict["d_in"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{cfg_path} is not a sae_lens config: {exc}") from None
        meta = self.cfg_dict.get("metadata") or {}
        self.hook_name = meta.get("hook_name") or self.cfg_dict.get("hook_name")
        self.model_name = meta.get("model_name") or self.cfg_dict.get("model_name")
        self.context_size = meta.get("context_size") or self.cfg_dict.get("context_size")
        self._sae = None
        self._digest: str | None = None

    @property
    def sae(self):
        if self._sae is None:
            self._sae = load_sae(self.path, dtype=self.dtype, device=self.device)
        return self._sae

    def files_digest(self) -> str:
        import hashlib

        from finsae._io import file_sha256

        parts = [file_sha256(self.path / name) for name in ("cfg.json", "sae_weights.safetensors")]
        return hashlib.sha256(f"{parts[0]}|{parts[1]}|{self.dtype}".encode()).hexdigest()[:32]

    @property
    def digest(self) -> str:
        if self._digest is None:
            import json

            from finsae._io import write_json
            from finsae._paths import cache_dir
            from finsae.extract.cache import sae_hash

            memo = cache_dir() / "sae_digests" / f"{self.files_digest()}.json"
            try:
                self._digest = str(json.loads(memo.read_text())["digest"])
            except (OSError, ValueError, KeyError):
                self._digest = sae_hash(self.sae)
                try:
                    write_json({"digest": self._digest, "path": str(self.path)}, memo)
                except OSError as exc:
                    logger.warning("cannot remember the SAE digest in %s: %s", memo, exc)
        return self._digest

    def __repr__(self) -> str:
        return f"SAEHandle({str(self.path)!r}, d_sae={self.d_sae}, hook={self.hook_name!r}, loaded={self._sae is not None})"
