"""A model package's readable card: ``MODEL_CARD.md`` rendered from ``model.json`` (the card is under ``card``).

One renderer for every card, whoever wrote the facts: ``tools/model_card.py`` (a shipped model: training data,
intended use, measured Dice on the real CT of tests/data and on held-out phantoms) and ``dvcl adapt`` (an adapted
model: the source model, the adaptation schedule, the site scans, and that scores on them are transductive). A card
can hold both, e.g. an adapted model measured afterwards with ``tools/model_card.py``; each part is rendered when
its facts are there. The markdown says nothing that ``model.json`` does not hold.

Torch-free (the Slicer module and ``dvcl info`` may read it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

#: the readable card, next to model.json
CARD_FILE = "MODEL_CARD.md"
#: who writes which facts: named in the card's last line
ADAPT_TOOL = "dvcl adapt"
MEASURE_TOOL = "tools/model_card.py"


def _network(meta: Mapping[str, Any]) -> str:
    prep = meta.get("preprocessing") or {}
    window = meta["inference"]
    fast = "; fast mode (`dvcl segment --fast`)" if meta.get("mode") == "fast" else ""
    return (f"U-Net channels {meta['network']['channels']}, models {', '.join(meta['models'])}, grid\n"
            f"  {' x '.join(str(v) for v in prep.get('spacing', []))} mm, window {window['roi']} stride\n"
            f"  {window['stride']} (z, y, x){fast}")


def _facts(meta: Mapping[str, Any]) -> List[str]:
    """The bullet list, in a fixed order: an adapted model's provenance first, then what every card holds."""
    card = meta["card"]
    lines: List[str] = []

    def fact(label: str, text: str, aside: str = "") -> None:
        lines.append(f"- **{label}**{aside}: {text}")

    src, ad = card.get("adapted_from"), card.get("adaptation")
    if src:
        fact("Adapted from", f"{src['name']} (weights sha256 {src['sha256']}, dvcl {src.get('dvcl_version')})")
    if ad:
        fact("Adaptation", f"{ad['method'].upper()}, {ad['iterations']} iterations, lr {ad['lr']:g}, "
                           f"seed {ad['seed']}; {ad['labeled_training_cases']} labeled training case(s) from "
                           f"`{ad['labeled_data']}`")
        scans = ad["unlabeled_scans"]
        fact("Unlabeled site scans", ", ".join(scans["files"]), f" ({scans['count']})")
    if card.get("transductive"):
        fact("Transductive", card["transductive"])
    fact("Intended use", card["intended_use"])
    fact("Training data", card["training_data"])
    if all(meta.get(k) for k in ("network", "models", "inference")):
        fact("Network", _network(meta))
    post = meta.get("postprocessing")
    if isinstance(post, dict):
        names = {str(k): v.get("name", k) for k, v in (meta.get("labels") or {}).items()}
        kept = ", ".join(str(names.get(str(k), k)) for k in post.get("largest_component", [])) or "none"
        fact("Post-processing", f"largest connected component only for {kept}; chosen on {post.get('chosen_on', '?')} "
                                "(`dvcl postprocess`)")
    fact("Date", card["date"])
    fact("Rebuild", f"`{card['rebuild']}`" + (f" then `{card['measure']}`" if card.get("measure") else ""))
    return lines


def _dice(value: Any) -> str:
    """A Dice for the card: three decimals, or ``-`` where nothing was measured (a structure the scan does not
    hold, or ``null`` in model.json, which is how a NaN is stored)."""
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _measured(card: Mapping[str, Any]) -> List[str]:
    """The "Measured Dice" section of a card measured by tools/model_card.py (empty for an unmeasured card)."""
    real, phantoms = card.get("real_ct"), card.get("phantoms")
    if not real or not phantoms:
        return []
    names = list(phantoms["dice"]) + [n for n in real["dice"] if n not in phantoms["dice"]]
    rows = [f"| {n} | {_dice(real['dice'].get(n))} | {_dice(phantoms['dice'].get(n))} |" for n in names]
    return [
        "## Measured Dice",
        "",
        f"Real CT: {real['case']}. Mean over its {real['organs']} organs:",
        f"**{_dice(real['mean_dice'])}** ({real['seconds_cpu']} s on the machine that measured it).",
        f"Held-out phantoms (seeds {', '.join(str(s) for s in phantoms['seeds'])}):",
        f"mean **{_dice(phantoms['mean_dice'])}**.",
        *_floors(card),
        "",
        "| structure | real CT | phantoms (mean) |",
        "|---|---|---|",
        *rows,
        "",
    ]


def _floors(card: Mapping[str, Any]) -> List[str]:
    """The real-CT floors lines: those claimed (reached, and held by the shipped-model test), then those missed."""
    def fmt(values: Mapping[str, float], digits: int = 2) -> str:
        return ", ".join(f"{k} {v:.{digits}f}" for k, v in values.items())

    lines = []
    if card.get("real_ct_floors"):
        lines.append(f"Real-CT floors reached and held by the test suite: {fmt(card['real_ct_floors'])}.")
    below = card.get("real_ct_below_floors")
    if below:
        # three digits: 0.696 is below 0.70 and must not read "0.70"
        lines.append(f"Below the real-CT floors ({fmt(below['floors'])}): {fmt(below['below'], 3)}.")
    if lines:
        return ["", *lines]
    return []


def card_markdown(meta: Mapping[str, Any]) -> str:
    """``MODEL_CARD.md`` of a package from its ``model.json`` (a dict with ``name`` and ``card``)."""
    card = meta["card"]
    measured = _measured(card)
    tools = [t for t, made in ((ADAPT_TOOL, card.get("adapted_from")), (MEASURE_TOOL, measured)) if made]
    lines = [f"# Model card: {meta['name']}", "", str(meta.get("description", "")), ""]
    lines += _facts(meta)
    lines += ["", *measured]
    lines += [f"Generated by {' and '.join(f'`{t}`' for t in tools) or 'dvcl'}; the same "
              f"{'numbers' if measured else 'facts'} are in `model.json` under `card`.", ""]
    return "\n".join(lines)


def write_model_card(model_dir: Union[str, Path], meta: Dict[str, Any]) -> Path:
    """Write ``meta`` (with its ``card``) as the package's ``model.json`` and render ``MODEL_CARD.md`` beside it,
    each atomically. Returns the card's path."""
    from dvcl.inference.model_package import MODEL_JSON
    from dvcl.utils.atomic import write_json_atomic, write_text_atomic

    model_dir = Path(model_dir)
    write_json_atomic(model_dir / MODEL_JSON, meta, strict=True)
    path = model_dir / CARD_FILE
    write_text_atomic(path, card_markdown(meta))
    return path
