"""DVCL: distance-aware voxel-wise contrastive co-training for semi-supervised multi-organ CT segmentation.

`import dvcl` stays light (no torch import) so that the CLI's help, the preset registry and the Slicer
module's dependency check answer instantly.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
