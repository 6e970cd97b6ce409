"""DVCLSegmentation: semi-supervised multi-organ CT segmentation (DVCL) in 3D Slicer.

This file is deliberately thin (the SlicerNNUnet pattern): module metadata, a widget wrapper around
``DVCLSegmentationLib.Widget`` and a self-test. Everything that can be tested without Slicer's GUI lives in
``DVCLSegmentationLib`` and is covered by the pytest suite in tests/slicer_module/.
"""

import logging
import os
import sys
import tempfile

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer < 5.4

    def _(text):
        return text


class DVCLSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DVCL Segmentation")
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["DVCLSegmentation developers"]
        self.parent.helpText = _(
            "Multi-organ CT segmentation with distance-aware voxel-wise contrastive co-training (DVCL, ICCV "
            "2025).<br><b>Segment</b>: pick a CT volume and a model, press Segment (the first time it offers to "
            "install the backend); each volume gets its own segmentation, placed in its study; optionally the "
            "networks' uncertainty (entropy, A/B disagreement) is shown over the CT with its mean per structure. "
            "<b>Train</b>: train on your own labeled (and unlabeled) scans; Stop saves a checkpoint at the end "
            "of the current iteration and Resume continues from it; the trained model appears in the Segment "
            "tab. <b>Evaluate</b>: Dice, Jaccard and HD95 per structure against a reference. <b>Setup</b>: "
            "install torch (through the PyTorch extension), MONAI and the dvcl backend, and see which GPU will "
            "be used.<br>The network always runs in a separate process, so Slicer stays responsive and Cancel "
            "really stops it. Sample data: the Sample Data module's 'DVCL Segmentation' section.<br>"
            "The bundled <i>synthetic_abdomen</i> model (the default) was trained on synthetic CT only and finds the "
            "large abdominal organs on real CT (see its model card); the <i>fast</i> box uses its 4 mm sibling "
            "<i>synthetic_abdomen_fast</i>; <i>synthetic_heart</i> (synthetic CT only as well) segments the heart "
            "chambers, myocardium, ascending aorta and pulmonary artery (MM-WHS); <i>phantom_demo</i> is a "
            "phantom-trained demo. "
            "Research and demonstration only, not for clinical use."
        )
        self.parent.acknowledgementText = _(
            "Built on MONAI and PyTorch. The module layout follows KitwareMedical/SlicerNNUnet; the import of "
            "results into segments follows lassoan/SlicerTotalSegmentator and SlicerMONAIAuto3DSeg."
        )


        # Sample data (a real abdomen CT and a phantom) once the application has started: SampleData must exist
        if hasattr(slicer, "app"):
            slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the module's samples with the Sample Data module (DVCLSegmentationLib/SampleDataSources.py)."""
    try:
        from DVCLSegmentationLib.SampleDataSources import register_sample_data

        register_sample_data()
    except ImportError as exc:  # no Sample Data module in this application
        logging.info("DVCLSegmentation sample data not registered: %s", exc)


class DVCLSegmentationWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from DVCLSegmentationLib.Widget import Widget

        self.panel = Widget()
        self.layout.addWidget(self.panel)

    def cleanup(self):
        if self.panel is not None:
            self.panel.cleanup()

    def onReload(self):
        """Reload the Lib package too (Slicer's default reload only re-imports this file)."""
        if self.panel is not None:
            self.panel.cleanup()
        for name in [n for n in sys.modules if n == "DVCLSegmentationLib" or n.startswith("DVCLSegmentationLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)


class DVCLSegmentationTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (``Slicer --testing`` or the Reload and Test button).

    The pytest suite (tests/slicer_module) covers the logic in depth without Slicer's GUI; this self-test
    checks what only a real Slicer can: the module's panel builds from the .ui, and segmenting a phantom with
    the bundled demo model works end to end through QProcess. The second part needs the backend installed
    (Setup tab) and is skipped with a message otherwise.
    """

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_panel_builds()
        self.setUp()
        self.test_segment_phantom_with_demo_model()

    def test_panel_builds(self):
        from DVCLSegmentationLib.Widget import Widget

        self.delayDisplay("Building the DVCLSegmentation panel")
        panel = Widget(show_dialogs=False)
        try:
            tabs = panel.ui.tabWidget
            self.assertEqual([tabs.tabText(i) for i in range(tabs.count)], ["Segment", "Train", "Evaluate", "Setup"])
            self.assertGreater(panel.ui.methodComboBox.count, 0)
            # the Train tab's adaptation lists the Segment tab's models
            self.assertEqual(panel.ui.adaptModelComboBox.count, panel.ui.modelComboBox.count)
        finally:
            panel.cleanup()
        self.delayDisplay("Panel OK")

    def test_segment_phantom_with_demo_model(self):
        from DVCLSegmentationLib import InstallLogic, SegmentationParameters, installed_models, segment_volume
        from DVCLSegmentationLib.Backend import dvcl_command
        from DVCLSegmentationLib.Process import default_process

        missing = InstallLogic().missing()
        if missing:
            self.delayDisplay("Skipping the segmentation test: " + ", ".join(s.describe() for s in missing))
            return
        demo = [m for m in installed_models() if m.path.name == "phantom_demo"]
        if not demo:
            self.delayDisplay("Skipping the segmentation test: the demo model is not installed")
            return
        model = demo[0]

        self.delayDisplay("Writing a synthetic abdominal CT phantom (dvcl phantom)")
        folder = tempfile.mkdtemp(prefix="dvcl-selftest-")
        process = default_process()
        process.start(dvcl_command(["phantom", folder, "--kind", "abdomen", "--labeled", "1", "--unlabeled", "1"]))
        result = process.wait(600)
        self.assertTrue(result.ok, result.error)
        images = os.path.join(folder, "labeled", "images")
        image_path = os.path.join(images, sorted(os.listdir(images))[0])
        volume = slicer.util.loadVolume(image_path)

        self.delayDisplay(f"Segmenting with '{model.name}' (may take a minute on a CPU)")
        params = SegmentationParameters(model_dir=str(model.path), device="auto")
        node = segment_volume(volume, params, timeout=1200)
        segmentation = node.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(names, [lab.name for lab in model.labels])
        liver_id = segmentation.GetSegmentIdBySegmentName("liver")
        if liver_id:
            voxels = slicer.util.arrayFromSegmentBinaryLabelmap(node, liver_id, volume).sum()
            logging.info("liver voxels: %d", voxels)
            self.assertGreater(voxels, 0)
        self.delayDisplay("Segmentation test passed")
