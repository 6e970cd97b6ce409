"""The list of model packages offered in the Segment tab: installed ones plus folders the user added.

User folders are remembered (the Widget stores :meth:`to_json` in QSettings) and a model exported at the
end of a training run is added here, so it can be used at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List, Optional, Union

from .Backend import ModelInfo, ModelPackageError, installed_models, read_model_info


class ModelRegistry:
    """Installed models (from the backend) followed by user-added folders, without duplicates."""

    def __init__(self, user_folders: Optional[List[str]] = None,
                 installed: Callable[[], List[ModelInfo]] = installed_models) -> None:
        self._installed = installed
        self.user_folders: List[str] = list(user_folders or [])

    def add(self, folder: Union[str, Path]) -> ModelInfo:
        """Check and remember a model folder; raises ModelPackageError when it is not a model package."""
        info = read_model_info(folder)
        key = str(info.path)
        if key not in self.user_folders:
            self.user_folders.append(key)
        return info

    def remove(self, folder: Union[str, Path]) -> None:
        key = str(Path(folder).expanduser().resolve())
        self.user_folders = [f for f in self.user_folders if f != key]

    def models(self) -> List[ModelInfo]:
        """All usable models; user folders that disappeared or broke are skipped, not fatal."""
        result, seen = [], set()
        for info in self._installed():
            if str(info.path) not in seen:
                seen.add(str(info.path))
                result.append(info)
        for folder in self.user_folders:
            try:
                info = read_model_info(folder)
            except ModelPackageError:
                continue
            if str(info.path) not in seen:
                seen.add(str(info.path))
                result.append(info)
        return result

    def to_json(self) -> str:
        return json.dumps(self.user_folders)

    @classmethod
    def from_json(cls, text: Optional[str], **kwargs) -> ModelRegistry:
        try:
            folders = json.loads(text) if text else []
        except ValueError:
            folders = []
        if not isinstance(folders, list):
            folders = []
        return cls([str(f) for f in folders], **kwargs)
