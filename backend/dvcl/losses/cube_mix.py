"""MagicNet's magic-cube partition and recovery (Chen et al., CVPR 2023; DeepMed-Lab-ECNU/MagicNet).

A patch is cut into a grid of equal cubes (96^3 patches into 3x3x3 cubes of 32^3 in the paper).

* Cross-image partition (:func:`partition` / :func:`recover`): for every cube position an independent random
  permutation of the batch decides which sample's cube goes into which mixed volume (labeled and unlabeled
  cubes mix). The network segments the mixed volumes; putting every cube back where it came from
  (:func:`recover`, the inverse permutation) gives a prediction of the original patches made in a
  different context. ``recover(partition(x, perm), perm) == x`` exactly.
* Within-image partition (:func:`split_cubes` / :func:`stitch_cubes`): each cube is segmented on its own as
  a small volume and the cube outputs are stitched back; the cube encodings also train a classifier of the
  cube's position (location reasoning).
* :func:`magic_dice_loss` is MagicNet's Dice (batch-wide, squared denominators, all classes, smooth 1e-10);
  :class:`ClassDistribution` the organ-class distribution of its pseudo-label blending.

3D lift of shapes [decided]: the released code uses ``nb_cubes = patch_y // cube`` on all three axes (cubic
patches only); here the grid is per axis, ``patch / cube`` for (z, y, x), so a 64x128x128 patch with
32^3 cubes gives a 2x4x4 grid.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from dvcl.errors import ConfigError
from dvcl.losses.sampling import rand

Triple = Tuple[int, int, int]


def cube_grid(spatial: Sequence[int], cube: Sequence[int]) -> Triple:
    """Cubes per axis for a (z, y, x) patch; :class:`ConfigError` unless the cube size divides the patch."""
    spatial = tuple(int(s) for s in spatial)
    cube = tuple(int(c) for c in cube)
    if len(spatial) != 3 or len(cube) != 3 or any(c < 1 for c in cube):
        raise ConfigError(f"cube size {list(cube)} and patch {list(spatial)} must be three positive sizes")
    if any(s % c for s, c in zip(spatial, cube)):
        raise ConfigError(f"MagicNet cube size {list(cube)} must divide the patch size {list(spatial)} (z, y, x)")
    return tuple(s // c for s, c in zip(spatial, cube))  # type: ignore[return-value]


def to_cubes(x: Tensor, cube: Sequence[int]) -> Tensor:
    """(B, C, Z, Y, X) -> (B, K, C, cz, cy, cx), K = nz * ny * nx cubes in row-major (z, y, x) order."""
    b, c = x.shape[:2]
    nz, ny, nx = cube_grid(x.shape[2:], cube)
    cz, cy, cx = (int(v) for v in cube)
    t = x.reshape(b, c, nz, cz, ny, cy, nx, cx).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return t.reshape(b, nz * ny * nx, c, cz, cy, cx)


def from_cubes(blocks: Tensor, grid: Sequence[int]) -> Tensor:
    """Inverse of :func:`to_cubes`: (B, K, C, cz, cy, cx) -> (B, C, Z, Y, X)."""
    b, k, c, cz, cy, cx = blocks.shape
    nz, ny, nx = (int(v) for v in grid)
    if k != nz * ny * nx:
        raise ValueError(f"{k} cubes do not fill a {nz}x{ny}x{nx} grid")
    t = blocks.reshape(b, nz, ny, nx, c, cz, cy, cx).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return t.reshape(b, c, nz * cz, ny * cy, nx * cx)


def random_cube_permutation(batch: int, num_cubes: int, device: torch.device,
                            generator: Optional[torch.Generator] = None) -> Tensor:
    """(B, K) long: column k is a random permutation of the batch (``argsort`` of uniform noise, as released)."""
    return torch.argsort(rand((batch, num_cubes), device, generator), dim=0)


def partition(x: Tensor, perm: Tensor, cube: Sequence[int]) -> Tensor:
    """Cross-image mixing: cube k of output b is cube k of input ``perm[b, k]``."""
    blocks = to_cubes(x, cube)
    k = torch.arange(blocks.shape[1], device=x.device)
    return from_cubes(blocks[perm, k], cube_grid(x.shape[2:], cube))


def recover(y: Tensor, perm: Tensor, cube: Sequence[int]) -> Tensor:
    """Undo :func:`partition` on any per-voxel output of the mixed volumes (features, logits)."""
    inverse = torch.argsort(perm, dim=0)
    return partition(y, inverse, cube)


def split_cubes(x: Tensor, cube: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """Within-image partition: (B, C, Z, Y, X) -> (cubes (B*K, C, cz, cy, cx), location label (B*K,))."""
    blocks = to_cubes(x, cube)
    b, k = blocks.shape[:2]
    locations = torch.arange(k, device=x.device).repeat(b)
    return blocks.reshape(b * k, *blocks.shape[2:]), locations


def stitch_cubes(cubes: Tensor, batch: int, grid: Sequence[int]) -> Tensor:
    """Inverse of :func:`split_cubes` for per-voxel outputs: (B*K, C, cz, cy, cx) -> (B, C, Z, Y, X)."""
    k = cubes.shape[0] // batch
    return from_cubes(cubes.reshape(batch, k, *cubes.shape[1:]), grid)


def magic_dice_loss(probs: Tensor, target: Tensor, smooth: float = 1e-10) -> Tensor:
    """MagicNet's ``DiceLoss``: mean over all classes of ``1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s)``.

    Sums run over the whole batch and volume. ``probs`` (B, C, ...); ``target`` (B, [1,] ...) integer labels.
    """
    num_classes = probs.shape[1]
    if target.dim() == probs.dim():
        target = target[:, 0]
    p = probs.float()
    onehot = torch.nn.functional.one_hot(target.long(), num_classes).movedim(-1, 1).to(p)
    axes = [0] + list(range(2, p.dim()))
    inter = (p * onehot).sum(axes)
    union = (p * p).sum(axes) + (onehot * onehot).sum(axes)
    return (1.0 - (2.0 * inter + smooth) / (union + smooth)).mean()


class ClassDistribution:
    """MagicNet's ``OrganClassLogger``: pseudo-label class counts, refreshed every ``update_every`` records.

    The released code stores every pseudo-labeled voxel's class (millions per iteration) and counts them at the
    refresh; keeping running counts gives the same numbers in constant memory.
    """

    def __init__(self, num_classes: int, update_every: int = 20) -> None:
        self.num_classes = int(num_classes)
        self.update_every = max(1, int(update_every))
        self.pending = torch.zeros(self.num_classes, dtype=torch.float64)
        self.dist = torch.zeros(self.num_classes, dtype=torch.float64)
        self.records = 0

    def record(self, labels: Tensor) -> None:
        self.pending += torch.bincount(labels.reshape(-1).long(), minlength=self.num_classes)[
            : self.num_classes].to(torch.float64).cpu()
        self.records += 1

    def maybe_refresh(self, iteration: int) -> None:
        """Refresh at iterations that are multiples of ``update_every`` (``iter_num % 20 == 0`` in the code)."""
        if iteration % self.update_every == 0 and self.records:
            self.dist = self.pending.clone()
            self.pending.zero_()
            self.records = 0

    @property
    def ready(self) -> bool:
        return bool(self.dist.sum() > 0)

    def weights(self, temperature: float = 1.0) -> Tensor:
        """``dist ** (1/T)``, normalised to sum 1 and then to max 1 (the blending weight omega per class)."""
        d = self.dist ** (1.0 / temperature)
        d = d / d.sum().clamp(min=1e-12)
        return (d / d.max().clamp(min=1e-12)).float()

    def state(self) -> Tensor:
        return torch.cat([self.pending, self.dist, torch.tensor([float(self.records)], dtype=torch.float64)])

    def load_state(self, state: Tensor) -> None:
        c = self.num_classes
        s = state.to(torch.float64).cpu()
        self.pending, self.dist, self.records = s[:c].clone(), s[c:2 * c].clone(), int(s[2 * c].item())
