"""Inference engines: who runs the network on the sliding windows (``dvcl segment --engine``).

* ``torch``: the package's networks in PyTorch (fp32 on the CPU, fp16 autocast on CUDA). Always available,
  the reference every other engine is checked against.
* ``onnxruntime`` / ``openvino``: the same networks exported once to ONNX and run by ONNX Runtime or by
  OpenVINO (fp32: OpenVINO's CPU plugin is told not to drop to bf16 on CPUs that have it). Optional
  dependencies of the backend (installed by default; the backend runs without them): an engine that is
  not installed degrades to torch with a log message.
* ``auto``: the fastest installed engine for the device, taken from :data:`AUTO_ORDER`, a table of
  measurements (docs/results/speed.md, benchmarks/bench_segment_speed.py). An ONNX engine is used only once
  it has shown, on this machine, at least :data:`MIN_AGREEMENT` voxel agreement with torch fp32: the first
  time a graph runs on an engine the predictor also runs torch on one batch of windows from the middle of
  the volume and compares the labels (:func:`record_check`); the result is stored next to the graph, so the
  check costs one batch once per model, engine version and machine. ``auto`` falls back to torch when the
  check fails.

The exported graph (softmax probabilities of one model, dynamic batch and window size, opset
:data:`OPSET`) is cached under :func:`graph_cache_dir`, keyed by the weights' SHA-256, the model name, the
network config and the torch version, and written atomically, so a changed package never meets a stale
graph and a half-written file is never read. A package may ship its graphs next to its weights
(``<package>/<model>.<key>.onnx``); those are used first and never written (package folders may be
read-only, and a package's contents should not change by being used).

Once a graph and its check are cached, nothing here imports torch: the key reads torch's version from the
installed distribution's metadata, the ONNX engines take and return numpy arrays, and their thread count comes
from :mod:`dvcl.utils.threads`. torch is imported to export a graph, for the check, and by the torch engine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvcl.errors import ConfigError, DVCLError, OutputWriteError
from dvcl.inference.arrays import ops_for
from dvcl.utils.threads import configured_threads

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dvcl.inference.model_package import ModelPackage

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
#: Python module that provides each optional engine.
ENGINE_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
#: The measured table ``auto`` decides by (docs/results/speed.md, ``benchmarks/bench_segment_speed.py --cases
#: engines``): network stage of the shipped demo model on the real abdomen CT, 2-core AMD EPYC (Zen 4) CPU,
#: window batch 4, one interleaved run of 2 rounds: speed-up over torch with one window per call, and voxel
#: agreement of the label map with torch fp32. On CUDA only torch is offered (the ONNX runtimes installed
#: here are CPU builds; torch fp16 autocast there is unchanged).
MEASURED: Dict[str, Dict[str, Dict[str, float]]] = {
    "cpu": {
        "openvino": {"speedup": 5.24, "voxel_agreement": 0.999977},
        "torch": {"speedup": 4.15, "voxel_agreement": 0.999999},
        "onnxruntime": {"speedup": 2.26, "voxel_agreement": 0.999998},
    },
    "cuda": {"torch": {"speedup": 1.0, "voxel_agreement": 1.0}},
}
#: The least voxel agreement with torch fp32 for ``auto`` to use an engine.
MIN_AGREEMENT = 0.999
#: ``auto``'s order per device type: the measured engines that keep :data:`MIN_AGREEMENT`, fastest first.
AUTO_ORDER: Dict[str, Tuple[str, ...]] = {
    dev: tuple(sorted((e for e, m in table.items() if m["voxel_agreement"] >= MIN_AGREEMENT),
                      key=lambda e, t=table: -t[e]["speedup"]))
    for dev, table in MEASURED.items()
}
#: ONNX opset: accepted by ONNX Runtime >= 1.17 and OpenVINO >= 2023.
OPSET = 17
#: Bump when the exported graph's content changes (invalidates caches).
GRAPH_VERSION = 1
CACHE_ENV = "DVCL_CACHE"


# ----------------------------------------------------------------------------------------- selection
def engine_installed(name: str) -> bool:
    """Whether an engine's runtime can be imported (checked without importing it)."""
    if name == "torch":
        return True
    module = ENGINE_MODULES.get(name)
    if module is None:
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed_engines() -> List[str]:
    """Engines usable here, torch first."""
    return [e for e in ENGINES[1:] if engine_installed(e)]


def resolve_engine(requested: str, device_type: str) -> str:
    """The engine that will run: ``auto`` picks from :data:`AUTO_ORDER`; a missing one degrades to torch.

    Raises:
        ConfigError: an unknown engine name.
    """
    requested = (requested or "auto").lower()
    if requested not in ENGINES:
        raise ConfigError(f"unknown engine '{requested}': use one of {', '.join(ENGINES)}")
    order = AUTO_ORDER.get(device_type, ("torch",))
    if requested == "auto":
        return next(e for e in order + ("torch",) if engine_installed(e))
    if requested == "torch":
        return "torch"
    if requested not in order:
        log.warning("engine %s does not run on %s here: using torch", requested, device_type)
        return "torch"
    if not engine_installed(requested):
        log.warning("engine %s is not installed (pip install %s): using torch", requested, ENGINE_MODULES[requested])
        return "torch"
    return requested


# ----------------------------------------------------------------------------------------- graph cache
def graph_cache_dir() -> Path:
    """Where exported graphs are cached: ``$DVCL_CACHE/onnx``, else ``$XDG_CACHE_HOME/dvcl/onnx`` or
    ``~/.cache/dvcl/onnx``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dvcl" / "onnx"


def exporter_version() -> str:
    """The torch version that exports the graphs, without its local build tag (``2.13.0``).

    Read from the installed distribution's metadata, so looking a graph up does not import torch; from torch
    itself only where the metadata is missing (a source checkout on the path). Both give ``torch.__version__``,
    so keys made before this function existed stay valid.
    """
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        import torch

        version = torch.__version__
    return str(version).split("+")[0]


def graph_key(package: ModelPackage, model: str) -> str:
    """Identity of an exported graph: weights, model, network config, exporter versions (16 hex)."""
    from dvcl.inference.model_package import WEIGHTS

    h = hashlib.sha256()
    with open(Path(package.path) / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(json.dumps({"model": model, "network": package.meta.get("network"), "opset": OPSET,
                         "graph": GRAPH_VERSION, "torch": exporter_version()},
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


def graph_path(package: ModelPackage, model: str, key: Optional[str] = None) -> Path:
    """The graph to use: one shipped next to the weights, else the cache location (maybe not yet written)."""
    key = key or graph_key(package, model)
    shipped = Path(package.path) / f"{model}.{key}.onnx"
    if shipped.is_file():
        return shipped
    return graph_cache_dir() / f"{package.name}-{model}.{key}.onnx"


class _Probabilities:
    """Factory for the exported module (kept out of module scope so importing this file needs no torch)."""

    @staticmethod
    def wrap(net):
        from torch import nn

        class Probabilities(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x):
                import torch

                return torch.softmax(self.inner.segment(x), dim=1)

        return Probabilities(net)


def export_onnx(net, path: Path, roi: Sequence[int]) -> Path:
    """Export ``softmax(net.segment(x))`` to ONNX at ``path`` (atomic), dynamic batch and window size.

    Uses the TorchScript exporter (``dynamo=False``): it needs nothing beyond torch and onnx, works offline,
    and gives a graph both runtimes accept.
    """
    import torch

    from dvcl.utils.atomic import atomic_path

    was_training = net.training
    net.eval()
    x = torch.zeros(1, 1, *[int(r) for r in roi])
    axes = {0: "n", 2: "z", 3: "y", 4: "x"}
    try:
        with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")  # tracer warnings about the shape checks (constant for a window)
            torch.onnx.export(_Probabilities.wrap(net), (x,), str(tmp), input_names=["x"], output_names=["p"],
                              dynamic_axes={"x": axes, "p": axes}, opset_version=OPSET, **_legacy_exporter())
    finally:
        net.train(was_training)
    return path


def _legacy_exporter() -> dict:
    """``dynamo=False`` where torch has the switch (2.5+; it defaults to the dynamo exporter, which needs
    onnxscript), nothing on older torch (TorchScript exporter only)."""
    import inspect

    import torch

    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def ensure_graph(package: ModelPackage, model: str) -> Path:
    """The ONNX graph of one model, exported on first use (to the cache, or a temporary folder when the
    cache cannot be written)."""
    key = graph_key(package, model)
    path = graph_path(package, model, key)
    if path.is_file():
        return path
    log.info("exporting model %s of '%s' to ONNX (once; cached in %s)", model, package.name, path.parent)
    net = package.models[model]
    try:
        return export_onnx(net, path, package.roi)
    except (OutputWriteError, OSError) as exc:
        tmp = Path(tempfile.mkdtemp(prefix="dvcl-onnx-")) / path.name
        log.warning("cannot cache the ONNX graph (%s): using %s for this run", exc, tmp)
        return export_onnx(net, tmp, package.roi)


def import_openvino() -> Any:
    """``import openvino`` without its model-conversion tool ``openvino.tools.ovc``, which we never use (graphs
    come from ONNX files, read by the runtime).

    Why: importing ``openvino`` also imports ``ovc``, whose import sends a usage event to Google Analytics in a
    background thread, counts every import in ``~/intel/stats`` and writes a client id to ``~/intel`` whenever
    the user has not opted out (no consent file counts as consent for it). A segmentation tool run on patient
    scans in a hospital must not phone home or leave files in the user's home; it also saves about 0.1 s of
    import. ``openvino`` itself skips ``ovc`` when its import fails; a process that imported ``ovc`` before
    keeps it.
    """
    import sys

    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino.tools.ovc" not in sys.modules
    if blocked:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]  # makes its import fail
    try:
        import openvino
    finally:
        if blocked and sys.modules.get("openvino.tools.ovc", 0) is None:
            del sys.modules["openvino.tools.ovc"]  # a later explicit import (someone else's) works
    return openvino


_OPENVINO_CORE: List[Any] = []


def openvino_core() -> Any:
    """The process's one OpenVINO ``Core``, created on first use and kept until the process ends.

    Why one: OpenVINO's CPU plugin, created once per ``Core`` on its first compilation, installs its own
    alternate signal stack on the calling thread and puts back the previous one when it is destroyed. Two
    ``Core``s destroyed in the order they were created (an engine kept alive by a traceback, two predictors
    of one run) leave the thread's alternate stack pointing at the first plugin's freed stack, and the next
    signal the process receives (Ctrl-C, the Slicer module's Cancel, which is SIGTERM) crashes it with a
    segmentation fault instead of stopping it cleanly (Python installs its handlers with SA_ONSTACK). One
    ``Core``, hence one plugin, per process never unwinds out of order; it also loads the plugin once.
    """
    if not _OPENVINO_CORE:
        _OPENVINO_CORE.append(import_openvino().Core())
    return _OPENVINO_CORE[0]


# ----------------------------------------------------------------------------------------- agreement
def _check_file(graph: Path) -> Path:
    return graph.with_name(graph.name + ".check.json")


def engine_fingerprint(engine: str) -> str:
    """Engine version and CPU: a check made with another version or on another CPU does not count."""
    version = "?"
    try:
        if engine == "onnxruntime":
            import onnxruntime

            version = onnxruntime.__version__
        elif engine == "openvino":
            openvino = import_openvino()
            version = openvino.__version__ if hasattr(openvino, "__version__") else openvino.get_version()
    except ImportError:
        pass
    return f"{engine} {version} on {platform.machine()} {_cpu_name()}"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def recorded_agreement(graphs: Sequence[Path], engine: str) -> Optional[float]:
    """The lowest agreement recorded for ``engine`` on these graphs, or None when any is unchecked."""
    fp = engine_fingerprint(engine)
    worst = 1.0
    for g in graphs:
        try:
            data = json.loads(_check_file(g).read_text(encoding="utf-8"))
            worst = min(worst, float(data[fp]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return worst


def record_check(graphs: Sequence[Path], engine: str, agreement: float) -> None:
    """Store a measured agreement next to each graph (best effort: an unwritable cache just re-checks)."""
    from dvcl.utils.atomic import write_json_atomic

    fp = engine_fingerprint(engine)
    for g in graphs:
        f = _check_file(g)
        try:
            data = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
        except (OSError, ValueError):
            data = {}
        data[fp] = round(float(agreement), 7)
        try:
            write_json_atomic(f, data)
        except (DVCLError, OSError) as exc:
            log.debug("cannot record the engine check in %s: %s", f, exc)


# ----------------------------------------------------------------------------------------- engines
class Engine:
    """Runs the models of a package on batches of windows: ``probabilities(x) -> mean softmax``.

    ``x`` is a float32 batch ``(N, 1, Z, Y, X)`` of the engine's :attr:`array_kind` (a CPU tensor for torch, a
    numpy array for the ONNX engines, which never need torch); the result is ``(N, C, Z, Y, X)`` float32 of the
    same kind, the mean over models and the given flips (test-time augmentation).
    """

    name = "engine"
    #: what ``probabilities`` takes and returns: ``torch`` (tensors) or ``numpy`` (arrays)
    array_kind = "numpy"

    def _sum_models(self, x):
        raise NotImplementedError

    @property
    def num_models(self) -> int:
        raise NotImplementedError

    def probabilities(self, x, flips: Sequence[Tuple[int, ...]] = ((),)):
        ops = ops_for(x)
        acc = None
        for f in flips:
            p = self._sum_models(ops.flip(x, f) if f else x)
            if f:
                p = ops.flip(p, f)
            if acc is None:
                acc = p
            else:
                acc += p
        if acc is None:
            raise ConfigError("no flips given")
        acc /= self.num_models * len(flips)
        return acc


class TorchEngine(Engine):
    """The package's networks in PyTorch on ``device`` (fp16 autocast when ``amp``)."""

    name = "torch"
    array_kind = "torch"

    def __init__(self, nets: Sequence, device, amp: bool) -> None:
        self.nets = list(nets)
        self.device = device
        self.amp = amp

    @property
    def num_models(self) -> int:
        return len(self.nets)

    def probabilities(self, x: torch.Tensor, flips: Sequence[Tuple[int, ...]] = ((),)) -> torch.Tensor:
        # flips run on the compute device; only the mean comes back
        return super().probabilities(x.to(self.device), flips).to("cpu")

    def _sum_models(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        acc: Optional[torch.Tensor] = None
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            for net in self.nets:
                # softmax in fp32: fp16 logits are fine, fp16 exp/normalisation is not
                p = torch.softmax(net.segment(x).float(), dim=1)
                acc = p if acc is None else acc.add_(p)
        return acc


class OnnxRuntimeEngine(Engine):
    """ONNX Runtime, CPU execution provider, with the process's thread count (:mod:`dvcl.utils.threads`)."""

    name = "onnxruntime"

    def __init__(self, graphs: Sequence[Path], threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or configured_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.sessions = [ort.InferenceSession(str(g), sess_options=opts, providers=["CPUExecutionProvider"])
                         for g in graphs]

    @property
    def num_models(self) -> int:
        return len(self.sessions)

    def _sum_models(self, x: np.ndarray) -> np.ndarray:
        xn = np.ascontiguousarray(x, dtype=np.float32)
        acc = None
        for s in self.sessions:
            p = s.run(None, {"x": xn})[0]
            acc = p if acc is None else np.add(acc, p, out=acc)
        return acc


class OpenVINOEngine(Engine):
    """OpenVINO CPU plugin in fp32, compiled for a static ``(batch, 1, *roi)`` input (faster than dynamic
    shapes); a smaller last batch is padded with zeros and the padding dropped."""

    name = "openvino"

    def __init__(self, graphs: Sequence[Path], batch: int, roi: Sequence[int], threads: Optional[int] = None) -> None:
        core = openvino_core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": int(threads or configured_threads()),
                  "PERFORMANCE_HINT": "LATENCY"}
        blobs = graph_cache_dir() / "openvino"
        try:  # OpenVINO's own cache of compiled models: the next process compiles in a third of the time
            blobs.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(blobs)})
        except (OSError, RuntimeError) as exc:
            log.debug("no OpenVINO compile cache (%s)", exc)
        self.batch = int(batch)
        self.shape = (self.batch, 1, *[int(r) for r in roi])
        self.compiled = []
        for g in graphs:
            model = core.read_model(str(g))
            model.reshape(list(self.shape))
            self.compiled.append(core.compile_model(model, "CPU", config))
        self.requests = [c.create_infer_request() for c in self.compiled]

    @property
    def num_models(self) -> int:
        return len(self.compiled)

    def _sum_models(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if tuple(x.shape[1:]) != self.shape[1:] or n > self.batch:
            raise ConfigError(f"OpenVINO engine compiled for {self.shape}, got {tuple(x.shape)}")
        xn = np.ascontiguousarray(x, dtype=np.float32)
        if n < self.batch:
            xn = np.concatenate([xn, np.zeros((self.batch - n, *xn.shape[1:]), np.float32)])
        acc = None
        for r in self.requests:
            p = r.infer({0: xn})[0][:n]
            acc = np.array(p, copy=True) if acc is None else np.add(acc, p, out=acc)
        return acc


def build_engine(name: str, package: ModelPackage, models: Sequence[str], device, amp: bool, batch: int,
                 roi: Sequence[int]) -> Tuple[Engine, List[Path]]:
    """Create engine ``name`` (already resolved) for ``models`` of ``package``; returns it and its graphs.

    ``device`` is a name (``cpu``, ``cuda:0``) or a ``torch.device``; only the torch engine builds the networks
    (and imports torch). The ONNX engines need the graphs, exported (with torch) only when not cached.
    """
    if name == "torch":
        import torch

        dev = torch.device(device)
        nets = [package.models[m].to(dev).eval() for m in models]
        return TorchEngine(nets, dev, amp), []
    graphs = [ensure_graph(package, m) for m in models]
    if name == "onnxruntime":
        return OnnxRuntimeEngine(graphs), graphs
    if name == "openvino":
        return OpenVINOEngine(graphs, batch, roi), graphs
    raise ConfigError(f"unknown engine '{name}'")
