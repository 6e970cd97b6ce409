"""The network's hyper-parameters as one serialisable dataclass.

The same dictionary is stored in a run's ``config.yaml`` and in a model package's ``model.json``
(``"network"``), so inference rebuilds exactly the trained architecture with :func:`build_network`.
Torch-free on purpose: configs are read by the CLI and the Slicer module without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Tuple, Union

from dvcl.errors import ConfigError

#: settings of ``TrainConfig.channels_last`` (the memory format while training; dvcl.networks.memory_format)
CHANNELS_LAST_CHOICES: Tuple[str, ...] = ("auto", "on", "off")

Stride = Union[int, Tuple[int, int, int]]

NORMS = ("instance", "batch", "group")


@dataclass
class NetworkConfig:
    """A 3D U-Net with a segmentation head and a sparse projection head (METHOD.md section 2).

    Attributes:
        in_channels: image channels (1 for CT).
        num_classes: segmentation outputs, background included; 0 means "take it from the data set".
        channels: feature channels per resolution level, finest first. ``len(channels) - 1`` down-samplings.
        strides: down-sampling factor between consecutive levels, an int or a (z, y, x) triple per level;
            empty means 2 everywhere. Patch sizes must be divisible by the product of the strides.
        feature_dim: output size of the projection head (V = 256 [given]).
        norm: ``instance`` [decided: independent of the batch composition, so labeled/unlabeled halves
            and DDP shards need no synchronised statistics], ``batch`` or ``group``.
        dropout: dropout probability inside the convolution blocks.
        upsample: ``deconv`` (transposed convolution) or ``nontrainable`` (trilinear).
    """

    in_channels: int = 1
    num_classes: int = 0
    channels: Tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: Tuple[Stride, ...] = ()
    feature_dim: int = 256
    norm: str = "instance"
    dropout: float = 0.0
    upsample: str = "deconv"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.strides = tuple(_as_stride(s) for s in self.strides)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot build a network."""
        if len(self.channels) < 2 or any(c <= 0 for c in self.channels):
            raise ConfigError(f"network.channels must list at least 2 positive sizes, got {list(self.channels)}")
        if self.strides and len(self.strides) != len(self.channels) - 1:
            raise ConfigError(
                f"network.strides needs {len(self.channels) - 1} entries (one per down-sampling), "
                f"got {len(self.strides)}"
            )
        if self.in_channels < 1 or self.num_classes < 0 or self.feature_dim < 1:
            raise ConfigError("network.in_channels, num_classes and feature_dim must be positive")
        if self.norm not in NORMS:
            raise ConfigError(f"network.norm must be one of {', '.join(NORMS)}, got '{self.norm}'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"network.dropout must be in [0, 1), got {self.dropout}")
        if self.upsample not in ("deconv", "nontrainable"):
            raise ConfigError(f"network.upsample must be 'deconv' or 'nontrainable', got '{self.upsample}'")

    @property
    def level_strides(self) -> Tuple[Tuple[int, int, int], ...]:
        """Per-level (z, y, x) down-sampling factors, defaults filled in."""
        strides = self.strides or (2,) * (len(self.channels) - 1)
        return tuple(s if isinstance(s, tuple) else (s, s, s) for s in strides)

    @property
    def divisor(self) -> Tuple[int, int, int]:
        """What every input size (z, y, x) must be divisible by."""
        out = [1, 1, 1]
        for s in self.level_strides:
            out = [o * k for o, k in zip(out, s)]
        return tuple(out)

    @property
    def decoder_channels(self) -> int:
        """F, the channel count of the last decoder feature map returned by ``forward``."""
        return self.channels[0]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["strides"] = [list(s) if isinstance(s, tuple) else s for s in self.strides]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> NetworkConfig:
        """Build from a dict (YAML/JSON); unknown keys are an error so typos do not pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown network option(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        kwargs = dict(d)
        if "channels" in kwargs:
            kwargs["channels"] = tuple(kwargs["channels"])
        if "strides" in kwargs:
            kwargs["strides"] = tuple(kwargs["strides"] or ())
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid network config: {exc}") from exc


def _as_stride(s: Any) -> Stride:
    if isinstance(s, (list, tuple)):
        if len(s) != 3:
            raise ConfigError(f"a network stride must be an int or a (z, y, x) triple, got {s!r}")
        return tuple(int(v) for v in s)
    return int(s)
