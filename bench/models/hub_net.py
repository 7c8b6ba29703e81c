"""The networks of :mod:`bench.models.hub` (torch), built the way upstream builds them."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bench.core.errors import DataError
from bench.core.labels import N_CLASSES
from bench.models.base import check_input


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (a Lightning checkpoint's ``state_dict`` with its
    ``model.`` prefix taken off), read with ``weights_only``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    return state


def load_into(net: nn.Module, path: Path) -> nn.Module:
    """Load ``path`` into ``net``; a file of another architecture is refused naming the first mismatch."""
    try:
        net.load_state_dict(read_state(path))
    except (RuntimeError, KeyError) as err:
        raise DataError(f"{path}: not weights of this architecture ({str(err).splitlines()[0]})") from None
    return net.eval()


def unet(encoder: str, in_channels: int) -> nn.Module:
    """``smp.Unet`` with ``encoder``, no pretrained encoder weights, four classes."""
    import segmentation_models_pytorch as smp

    return smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=N_CLASSES)


class Checked(nn.Module):
    """A network that refuses input of another band count (the contract's)."""

    def __init__(self, net: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.net, self.in_channels = net, in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits."""
        check_input(x, self.in_channels)
        return self.net(x)


def channel_norm(x: torch.Tensor) -> torch.Tensor:
    """Per image and band: minus the mean, over the standard deviation, of the valid pixels (not NaN, not
    0); nodata becomes 0 (upstream ``channel_norm_torch``)."""
    valid = ~(torch.isnan(x) | (x == 0))
    count = valid.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    mean = torch.where(valid, x, 0).sum(dim=(2, 3), keepdim=True) / count
    centered = torch.where(valid, x - mean, 0)
    std = ((centered ** 2).sum(dim=(2, 3), keepdim=True) / count).sqrt()
    return centered / torch.where(std == 0, 1, std)


class Ensemble(nn.Module):
    """OmniCloudMask: per-patch band standardisation, then the mean of the networks' logits."""

    def __init__(self, nets: list[nn.Module], in_channels: int) -> None:
        super().__init__()
        self.nets, self.in_channels = nn.ModuleList(nets), in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean logits of the ensemble."""
        check_input(x, self.in_channels)
        x = channel_norm(x)
        return torch.stack([net(x) for net in self.nets]).mean(0)
