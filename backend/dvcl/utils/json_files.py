"""Reading the small JSON files users hand us (dataset.json, model.json, run metadata) in one way.

Every caller needs the same three outcomes: a dict, or a one-line error naming the file that is not JSON, or
that holds something other than an object. Only the error class differs (DatasetError, PresetError,
ModelError), so that the CLI maps it to the right message and exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Type

from dvcl.errors import DVCLError


def read_json_object(path: Path, error: Type[DVCLError]) -> Dict[str, Any]:
    """``path`` parsed as a JSON object (UTF-8); ``error`` with a one-line message otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: must hold a JSON object, got a {type(data).__name__}")
    return data
