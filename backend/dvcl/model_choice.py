"""Which installed model segments when none is named: one rule for ``dvcl segment`` and the Slicer Segment tab.

Standard library only: the Slicer module loads this file by path (``DVCLSegmentationLib.Catalog``) because its GUI
process must never import torch, and the backend's :func:`dvcl.inference.model_package.default_model` uses the same
functions, so the model the CLI picks is the one the panel preselects.

Ranking: the requested mode first (``fast`` models for ``fast``, else standard ones; a standard request falls back
to a fast model when no standard one exists, never the other way round), then the model card's mean Dice on real
CT (measured beats unmeasured), then shipped before user-installed, then name, so the choice is deterministic.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

#: the preset ``dvcl segment`` serves when none is given
DEFAULT_SEGMENT_PRESET = "flare22"
#: ``model.json`` ``"mode"``: ``standard``, or ``fast`` for the lower-resolution model of ``dvcl segment --fast``
MODES = ("standard", "fast")


def mode_of(meta: Mapping[str, Any]) -> str:
    """A model.json's mode (an unknown or missing one counts as ``standard``)."""
    mode = meta.get("mode", "standard")
    return mode if mode in MODES else "standard"


def card_score(meta: Mapping[str, Any]) -> Optional[float]:
    """The model card's mean Dice on real CT (``card.real_ct.mean_dice``), or None when not measured."""
    card = meta.get("card")
    real = card.get("real_ct") if isinstance(card, dict) else None
    score = real.get("mean_dice") if isinstance(real, dict) else None
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None


def best_model_index(models: Sequence[Tuple[str, str, Optional[float], bool, str]], preset: Optional[str] = None,
                     fast: bool = False) -> Optional[int]:
    """Position in ``models`` of the model to use for ``preset`` (default :data:`DEFAULT_SEGMENT_PRESET`), or None
    when no model serves the preset. Each entry: ``(preset, mode, real-CT mean Dice or None, shipped with the
    package, name)`` (:func:`ranking_entry` makes one from a model.json)."""
    preset = preset or DEFAULT_SEGMENT_PRESET
    for_preset = [i for i, m in enumerate(models) if m[0] == preset]
    wanted = [i for i in for_preset if (models[i][1] == "fast") == fast]
    if not wanted and not fast:
        wanted = for_preset
    if not wanted:
        return None

    def rank(i: int):
        _, _, score, builtin, name = models[i]
        return (score is None, -(score or 0.0), not builtin, name)

    return min(wanted, key=rank)


def ranking_entry(meta: Mapping[str, Any], builtin: bool) -> Tuple[str, str, Optional[float], bool, str]:
    """The entry :func:`best_model_index` ranks, from a model.json and where the package came from."""
    return (str(meta.get("preset", "")), mode_of(meta), card_score(meta), bool(builtin), str(meta.get("name", "")))
