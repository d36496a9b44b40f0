"""Sparse autoencoders in sae_lens format: load from disk or the hub, and check they fit the model."""

from __future__ import annotations

import logging
from pathlib import Path

from finsae.errors import DataError, ProviderError

logger = logging.getLogger(__name__)

#: The SAE shipped with the package (trained by ``finsae train-sae`` on the bundled 2017 descriptions).
DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "sae" / "gemma-3-270m-default"


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
    return sae


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
