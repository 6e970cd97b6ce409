"""The Train tab: semi-supervised training from the panel, with Stop (save and resume) and Force stop.

Method, preset and profile lists come from the backend's catalogue (``Catalog.py``) and are refreshed after an
installation. Choosing a profile shows its schedule (the preset's batch/iterations where the profile leaves
them open). Before a paper-profile run the GPU is checked: the paper setting needs about 11 GiB of GPU memory
and weeks on a CPU, so a smaller card or no GPU is said before the run starts, not after it fails.

The page's "Adapt a model to your scans" section (``dvcl adapt``) is bound by ``AdaptSection.py``.
"""

from __future__ import annotations

from typing import Any, Optional

from . import Catalog
from .Backend import DVCLModuleError
from .Parameter import TrainingParameters
from .TabBase import PanelHost, RunWidgets, TrainingRunTab, prop, set_items
from .TrainingLogic import TrainingLogic

DATASET_JSON_CHOICE = "dataset.json"
#: GPU memory the paper profile needs (64x128x128 patches, 4+4 batch, two networks, AMP): measured ~11 GiB
PAPER_PROFILE_GPU_GIB = 11.0
#: cards below this get a warning (an "8 GB" or "10 GB" card cannot hold the paper profile)
PAPER_PROFILE_MIN_CARD_GB = 12.0


def gpu_memory_warning(info: Optional[dict], device: str = "auto") -> Optional[str]:
    """What to tell the user before a paper-profile run on this machine (``dvcl info`` JSON); None if fine."""
    if device == "cpu":
        return ("The paper profile on the CPU takes about 90 s per iteration (20000 iterations: weeks). "
                "The quick profile is sized for a CPU. Start anyway?")
    if info is None:
        return None
    devices = info.get("devices") or {}
    gpus = devices.get("gpus") or []
    if not devices.get("cuda") or not gpus:
        return ("No CUDA GPU was found: the paper profile would run on the CPU at about 90 s per iteration "
                "(weeks). The quick profile is sized for a CPU. Start anyway?")
    index = 0
    if device.startswith("cuda:") and device[5:].isdigit():
        index = min(int(device[5:]), len(gpus) - 1)
    gpu = gpus[index]
    try:
        memory = float(gpu.get("memory_gb"))
    except (TypeError, ValueError):
        return None
    if memory < PAPER_PROFILE_MIN_CARD_GB:
        return (f"The paper profile needs about {PAPER_PROFILE_GPU_GIB:.0f} GiB of GPU memory; "
                f"{gpu.get('name', 'this GPU')} has {memory:.1f} GB, so training will probably stop with "
                "'CUDA out of memory'. Use the quick profile or a smaller patch. Start anyway?")
    return None


class TrainTab(TrainingRunTab):
    """Binds the Train page to a :class:`TrainingLogic`."""

    widgets = RunWidgets("trainStatusLabel", "trainProgressBar", "stopTrainingButton", "forceStopTrainingButton")
    run_name, refused_title, failed_title = "the training process", "Cannot train", "Training failed"
    exported_status = "Model '{name}' exported and added to the Segment tab"

    def __init__(self, ui: Any, host: PanelHost, logic: TrainingLogic) -> None:
        super().__init__(ui, host, logic)
        ui.startTrainingButton.clicked.connect(lambda *_: self.on_start(resume=False))
        ui.resumeTrainingButton.clicked.connect(lambda *_: self.on_start(resume=True))
        ui.showPlotButton.clicked.connect(self.on_show_plot)
        ui.presetComboBox.currentIndexChanged.connect(lambda *_: self.update_buttons())
        ui.profileComboBox.activated.connect(self.on_profile_chosen)  # user choice only, not refills
        logic.metrics.connect(self.on_metrics)

    def refresh_catalogue(self) -> None:
        ui, host = self.ui, self.host
        try:
            presets, methods, profiles = Catalog.preset_names(), Catalog.method_names(), Catalog.profile_names()
            method, profile = Catalog.default_method(), Catalog.default_profile()
        except DVCLModuleError as exc:
            host.append_log(f"Training lists unavailable: {exc}")
            return
        set_items(ui.presetComboBox, presets + [DATASET_JSON_CHOICE],
                  prop(ui.presetComboBox, "currentText") or host.settings_value("trainPreset", "flare22"))
        set_items(ui.methodComboBox, methods, prop(ui.methodComboBox, "currentText") or method)
        set_items(ui.profileComboBox, profiles, prop(ui.profileComboBox, "currentText") or profile)
        self.update_buttons()

    # -- parameters -----------------------------------------------------------------------------------
    def preset(self) -> str:
        preset = prop(self.ui.presetComboBox, "currentText")
        return prop(self.ui.datasetJsonEdit, "currentPath") if preset == DATASET_JSON_CHOICE else preset

    def parameters(self) -> TrainingParameters:
        p, ui = self.host.params, self.ui
        return TrainingParameters(
            data_dir=prop(ui.dataFolderEdit, "currentPath"), unlabeled_dir=prop(ui.unlabeledFolderEdit, "currentPath"),
            preset=self.preset(), method=prop(ui.methodComboBox, "currentText"),
            labeled_fraction=p.labeled_fraction, iterations=p.iterations, batch_labeled=p.batch_labeled,
            batch_unlabeled=p.batch_unlabeled, patch=(p.patch_z, p.patch_y, p.patch_x),
            run_dir=prop(ui.runFolderEdit, "currentPath"), device=p.train_device,
            profile=prop(ui.profileComboBox, "currentText"))

    def on_profile_chosen(self, *_: Any) -> None:
        """Show the chosen profile's schedule; the user may still edit the numbers afterwards."""
        defaults = Catalog.profile_defaults(prop(self.ui.profileComboBox, "currentText"), self.preset())
        p = self.host.params
        for key in ("iterations", "batch_labeled", "batch_unlabeled"):
            if key in defaults:
                setattr(p, key, int(defaults[key]))
        if "patch" in defaults:
            p.patch_z, p.patch_y, p.patch_x = (int(v) for v in defaults["patch"])

    # -- running --------------------------------------------------------------------------------------
    def on_start(self, resume: bool = False) -> None:
        host = self.host
        if not host.ensure_backend(True):
            return
        params = self.parameters()
        if not resume and params.profile == "paper":
            warning = gpu_memory_warning(host.device_info(), params.device)
            if warning and not host.confirm(warning):
                return
        overwrite = False
        if not resume and params.run_exists():
            if not host.confirm(f"{params.run_dir} already holds a training run. Replace it?\n"
                                "(Press Resume instead to continue it.)"):
                return
            overwrite = True

        def start() -> None:
            self.logic.start(params, scene=host.scene, resume=resume, overwrite=overwrite)
            host.set_settings_value("trainPreset", prop(self.ui.presetComboBox, "currentText"))

        self._start(start, resume)

    def on_metrics(self, event: dict) -> None:
        losses = ", ".join(f"{k} {float(v):.4g}" for k, v in (event.get("losses") or {}).items())
        dice = event.get("val_dice")
        text = f"it {event.get('iteration')}: {losses}" + (f" | val Dice {float(dice):.3f}" if dice is not None else "")
        self.host.append_log(text)
        self.update_buttons()

    def on_show_plot(self) -> None:
        curves = self.logic.curves
        if curves is not None and curves.chart is not None:
            self.host.show_chart(curves.chart)

    def update_start_buttons(self, running: bool) -> None:
        ui = self.ui
        ui.startTrainingButton.setEnabled(not running)
        ui.resumeTrainingButton.setEnabled(not running)
        ui.showPlotButton.setEnabled(self.logic.curves is not None)
        ui.datasetJsonEdit.setEnabled(prop(ui.presetComboBox, "currentText") == DATASET_JSON_CHOICE)
