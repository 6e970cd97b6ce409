"""Training data: endless streams of random patches from the prepared cache, exactly reproducible.

Why not shuffle-and-iterate: a resumed run must see the very batches the uninterrupted run would have
seen. Each sample of a stream therefore is a pure function of ``(seed, stream, k)``, where ``k`` is the
sample's global index: the case is ``permutation_epoch[k % n]`` with a seeded permutation per epoch, and
the MONAI transforms are re-seeded from ``(seed, stream, k)`` before each sample. The sampler hands out the
indices of iteration ``it`` on rank ``r`` of ``w`` as ``((it * w + r) * B, ..., +B-1)``: the ranks of a DDP
run draw disjoint slices of one global stream (like ``DistributedSampler``) and worker processes, resume
points and worker counts do not change what is drawn.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAffined,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandSpatialCropd,
    SpatialPadd,
)
from torch.utils.data import DataLoader, Dataset, Sampler

from dvcl.errors import DatasetError

log = logging.getLogger(__name__)

STREAM_LABELED = 1
STREAM_UNLABELED = 2


@dataclass(frozen=True)
class CaseItem:
    """One cached case: its id and the .npy files of image and (optional) label."""

    case_id: str
    image: str
    label: Optional[str] = None


@dataclass(frozen=True)
class SpatialAugmentation:
    """Random scaling and in-plane rotation of a crop (TrainConfig ``affine_prob``, ``scale_range``, ``rotate_deg``).

    The crop is first taken larger than the patch, so that a zoomed-out or rotated patch is filled with image,
    not padding (nnU-Net crops the same way before its spatial transform).
    """

    prob: float = 0.0
    scale_range: float = 0.25
    rotate_deg: float = 15.0

    def crop_size(self, patch: Sequence[int]) -> tuple:
        """The crop that holds every scaled and rotated patch: (1 + scale) x patch, and the in-plane box of a
        rotated patch."""
        grow = 1.0 + self.scale_range
        z, y, x = (float(p) for p in patch)
        angles = [math.radians(self.rotate_deg) * i / 90 for i in range(91)]  # the box peaks inside +-45 deg
        yr = max(y * abs(math.cos(t)) + x * abs(math.sin(t)) for t in angles)
        xr = max(x * abs(math.cos(t)) + y * abs(math.sin(t)) for t in angles)
        return tuple(int(math.ceil(v * grow)) for v in (z, yr, xr))

    def transform(self, keys: Sequence[str], patch: Sequence[int]) -> RandAffined:
        """MONAI's RandAffined to the patch size (unrotated crops are the centre of the larger crop)."""
        modes = tuple("nearest" if k == "label" else "bilinear" for k in keys)
        return RandAffined(keys, spatial_size=tuple(patch), prob=self.prob,
                           rotate_range=(math.radians(self.rotate_deg), 0.0, 0.0),
                           scale_range=(self.scale_range,) * 3, mode=modes, padding_mode="border")


def _mix(*values: int) -> int:
    """A 32-bit seed from several integers (numpy SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(v) % (2**63) for v in values]).generate_state(1)[0])


class PatchStream(Dataset):
    """Map-style dataset over an endless stream: item ``k`` is one augmented random patch (see module doc)."""

    def __init__(self, items: Sequence[CaseItem], patch: Sequence[int], seed: int, stream: int,
                 labeled: bool, foreground_oversample: float = 0.0, flip_prob: float = 0.5,
                 cache_in_memory: bool = False, oversample_mode: str = "any", num_classes: int = 0,
                 spatial: Optional[SpatialAugmentation] = None) -> None:
        if not items:
            raise DatasetError("no cases for a training stream")
        if labeled and any(it.label is None for it in items):
            raise DatasetError("a labeled training case has no label file")
        self.items = list(items)
        self.patch = tuple(int(p) for p in patch)
        self.seed = int(seed)
        self.stream = int(stream)
        self.labeled = labeled
        self.fg = float(foreground_oversample) if labeled else 0.0
        self.cache_in_memory = cache_in_memory
        self._memory: Dict[str, Dict[str, np.ndarray]] = {}
        keys = ["image", "label"] if labeled else ["image"]
        # what follows every crop: scale/rotate (when on), then flips
        augment = [RandFlipd(keys, prob=flip_prob, spatial_axis=axis) for axis in range(3)]
        crop = self.patch
        if spatial is not None and spatial.prob > 0:
            # crop larger, then scale/rotate (or, untouched, take the centre) down to the patch
            crop = spatial.crop_size(self.patch)
            augment = [spatial.transform(keys, self.patch), *augment]
        pad = SpatialPadd(keys, spatial_size=crop, mode="constant")
        self.random_crop = Compose([pad, RandSpatialCropd(keys, roi_size=crop, random_size=False), *augment])
        self.fg_crop = None
        if self.fg > 0 and oversample_mode == "class":
            # nnU-Net's sampling: a class drawn uniformly among the organs present in the case, then a voxel of it,
            # so a 2 ml adrenal gland is a crop centre as often as a 1.5 l liver (MONAI warns per absent class:
            # off, an absent organ is normal in abdominal CT)
            if num_classes < 2:
                raise DatasetError(f"class-balanced oversampling needs the number of classes, got {num_classes}")
            self.fg_crop = Compose([
                pad,
                RandCropByLabelClassesd(keys, label_key="label", spatial_size=crop,
                                        ratios=[0.0] + [1.0] * (num_classes - 1), num_classes=num_classes,
                                        num_samples=1, allow_smaller=True, warn=False),
                *augment,
            ])
        elif self.fg > 0:
            self.fg_crop = Compose([
                pad,
                RandCropByPosNegLabeld(keys, label_key="label", spatial_size=crop, pos=1.0, neg=0.0,
                                       num_samples=1, allow_smaller=True),
                *augment,
            ])

    def __len__(self) -> int:  # the stream is endless; the sampler decides what is drawn
        return 2**62

    def case_for(self, k: int) -> CaseItem:
        """The case of global sample ``k``: a seeded permutation per pass over the cases."""
        n = len(self.items)
        epoch, pos = divmod(int(k), n)
        order = np.random.default_rng(_mix(self.seed, self.stream, epoch)).permutation(n)
        return self.items[order[pos]]

    def _load(self, item: CaseItem) -> Dict[str, np.ndarray]:
        if item.case_id in self._memory:
            return self._memory[item.case_id]
        try:
            data = {"image": np.load(item.image)[None].astype(np.float32, copy=False)}
            if self.labeled:
                data["label"] = np.load(item.label)[None]
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{item.image}: cannot read cached case {item.case_id} ({exc})") from exc
        if self.cache_in_memory:
            self._memory[item.case_id] = data
        return data

    def __getitem__(self, k: int) -> Dict[str, object]:
        item = self.case_for(k)
        data = dict(self._load(item))
        rng = np.random.default_rng(_mix(self.seed, self.stream, k, 1))
        use_fg = self.fg_crop is not None and rng.random() < self.fg and bool(data["label"].any())
        pipeline = self.fg_crop if use_fg else self.random_crop
        pipeline.set_random_state(seed=_mix(self.seed, self.stream, k, 2))
        out = pipeline(data)
        if isinstance(out, list):  # the label-driven crops return a list of num_samples=1 dicts
            out = out[0]
        sample: Dict[str, object] = {"image": _plain(out["image"]).float(), "case": item.case_id, "index": int(k)}
        if self.labeled:
            sample["label"] = _plain(out["label"]).long()
        return sample


def _plain(x) -> torch.Tensor:
    """A plain tensor (MONAI MetaTensors carry metadata through collate and the model for nothing)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)


class StreamSampler(Sampler):
    """Endless indices for iterations ``start, start+1, ...`` of one rank (see the module docstring)."""

    def __init__(self, batch_size: int, start_iteration: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.batch_size = int(batch_size)
        self.start = int(start_iteration)
        self.rank = int(rank)
        self.world = int(world_size)

    def indices_for(self, iteration: int) -> List[int]:
        base = (iteration * self.world + self.rank) * self.batch_size
        return list(range(base, base + self.batch_size))

    def __iter__(self) -> Iterator[int]:
        it = self.start
        while True:
            yield from self.indices_for(it)
            it += 1


def make_loader(stream: PatchStream, batch_size: int, start_iteration: int, rank: int, world_size: int,
                num_workers: int, pin_memory: bool) -> Iterator[Dict[str, object]]:
    """An endless iterator of batches for iterations ``start_iteration, ...``."""
    loader = DataLoader(
        stream,
        batch_size=batch_size,
        sampler=StreamSampler(batch_size, start_iteration, rank, world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
        drop_last=False,
        worker_init_fn=_worker_init,
        # a private generator: creating the loader must not draw from the global torch RNG, whose state a
        # resumed run restores from the checkpoint
        generator=torch.Generator().manual_seed(stream.seed),
    )
    return iter(loader)


def _worker_init(worker_id: int) -> None:
    """Workers ignore Ctrl-C/SIGTERM: the main process stops cleanly at an iteration boundary and needs its
    workers alive until then (a worker that dies on SIGINT makes the next batch fetch fail)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
