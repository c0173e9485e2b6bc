"""timm models by name (`--model timm/<name>`), with timm's own pretrained weights and cache.

timm is optional (`pip install medtrain[timm]`). Pretrained weights come from the Hugging Face
hub cache timm uses (`$HF_HOME/hub`, default ~/.cache/huggingface/hub): offline, the file
must already be there (`huggingface-cli download <hf_hub_id>` on a connected machine, then copy
the cache folder). timm builds the new classifier head and adapts the stem to `in_channels`.
"""
from __future__ import annotations

from torch import nn

from common.errors import ConfigError

PREFIX = "timm/"


def _timm(name: str):
    try:
        import timm
    except ImportError:
        raise ConfigError(f"--model {PREFIX}{name}: timm is not installed; pip install 'medtrain[timm]'") from None
    if not timm.is_model(name):
        import difflib
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        raise ConfigError(f"--model {PREFIX}{name}: timm has no such model"
                          f"{f' (did you mean {PREFIX}{close[0]}?)' if close else ''}")
    return timm


def _missing_weights_message(timm, name: str, exc: Exception) -> str:
    from huggingface_hub import constants
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return f"--model {PREFIX}{name}: pretrained weights unavailable ({type(exc).__name__}: {str(exc)[:120]})"
    folder = f"{constants.HF_HUB_CACHE}/models--{hub_id.replace('/', '--')}"
    return (f"--model {PREFIX}{name} --model.pretrained imagenet: weights not cached and not downloadable "
            f"({type(exc).__name__}); put model.safetensors of https://huggingface.co/{hub_id} at "
            f"{folder}/snapshots/<commit>/model.safetensors with {folder}/refs/main holding <commit> "
            f"(`huggingface-cli download {hub_id}` on a connected machine, then copy that folder)")


def build_timm(name: str, num_classes: int, image_size: int, in_channels: int = 3, dropout: float = 0.0,
          pretrained: bool = False) -> nn.Module:
    timm = _timm(name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels,
                                 drop_rate=dropout)
    except ConfigError:
        raise
    except Exception as exc:  # hub errors (offline, missing file) come in many types
        if not pretrained:
            raise
        raise ConfigError(_missing_weights_message(timm, name, exc)) from None
