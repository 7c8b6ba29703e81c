"""Hub-hosted PyTorch masks, built the way upstream builds them and loaded from the local Hugging Face cache
or ``--weights PATH`` (:func:`bench.models.base.locate_weights`; the run stops before anything else when
they are missing, saying how to get them).

* ``cloudsen12_unet`` (``cloudsen12_unetmobv2``): ``smp.Unet("mobilenet_v2", in_channels=13, classes=4)``
  as ``cloudsen12_models`` (spaceml-org, ``CDModel``) builds it; weights ``UNetMobV2_V2.pt`` of
  ``isp-uv-es/cloudsen12_models``, a state dict (or a Lightning checkpoint with ``state_dict``). Input: the
  13 L1C bands as reflectance, as upstream's ``predict`` takes them.
* ``omnicloudmask``: the version-4 ensemble of the ``omnicloudmask`` package, two ``smp.Unet`` with timm
  encoders (``tu-regnety_004``, ``tu-edgenext_small``), 3 bands (B04, B03, B8A), 4 classes, safetensors
  files of ``NickWright/OmniCloudMask``. Each patch is standardised per band over its valid pixels (upstream
  ``channel_norm``; nodata = NaN or 0) and the two networks' logits are averaged (``infer_batch``).

How upstream tiles a scene for each (1000 px patches blended by linear ramps; the whole scene reflected
around its centre) is the contract's inference policy in ``registry/models.toml``
(:class:`bench.models.base.InferencePolicy`).
"""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import ConfigError
from bench.core.registry import register
from bench.core.results import sha256
from bench.models.base import Built


@register("model", "cloudsen12_unet")
def cloudsen12_unet(in_channels: int, weight_files: list, encoder: str = "mobilenet_v2") -> Built:
    """CloudSEN12 U-Net (13 L1C bands, clear / thick / thin / shadow) with published weights."""
    from bench.models.hub_net import Checked, load_into, unet

    path = Path(weight_files[0])
    net = load_into(unet(encoder, in_channels), path)
    return Built(Checked(net, in_channels).eval(), in_channels, f"pretrained {path.name} sha256:{sha256(path)[:12]}")


@register("model", "omnicloudmask")
def omnicloudmask(in_channels: int, weight_files: list, encoders: list[str] | None = None) -> Built:
    """OmniCloudMask ensemble (Red, Green, NIR; clear / thick / thin / shadow) with published weights."""
    from bench.models.hub_net import Ensemble, load_into, unet

    encoders = encoders or ["tu-regnety_004", "tu-edgenext_small"]
    if len(encoders) != len(weight_files):
        raise ConfigError(f"omnicloudmask: {len(encoders)} encoders but {len(weight_files)} weight files")
    nets = [load_into(unet(e, in_channels), Path(f)) for e, f in zip(encoders, weight_files)]
    shas = ", ".join(f"{Path(f).name} sha256:{sha256(Path(f))[:12]}" for f in weight_files)
    return Built(Ensemble(nets, in_channels).eval(), in_channels, f"pretrained {shas}")
