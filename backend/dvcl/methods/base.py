"""The Method interface: what differs between SSL methods, while the one shared Trainer does the rest.

A method owns its models (e.g. co-trained nets A and B, or a student and an EMA teacher) and its loss.
The :class:`~dvcl.training.trainer.Trainer` owns everything else (data, optimiser, LR schedule, AMP,
validation, checkpoints, logging, DDP), so comparisons between methods differ only in this class.

Contract (docs/architecture.md, "Methods"):

* ``build_models()`` returns ``{name: nn.Module}``; the Trainer calls :meth:`Method.setup`, which moves them
  to ``self.device`` and stores them in ``self.models``. Models built from :meth:`Method.new_network` are
  :class:`dvcl.networks.SegNet` (``forward -> (logits, feats)``, ``project``, ``segment``).
* ``compute_loss(batch_l, batch_u, iteration)`` runs inside ``torch.autocast`` on CUDA (AMP): compute
  softmax/log/entropy terms on ``logits.float()``. ``iteration`` is the 0-based index of the step being
  taken (``0 .. cfg.iterations - 1``); ramp-ups use ``iteration / cfg.iterations``. It returns the total
  loss and a dict of float loss terms (logged to metrics.csv, TensorBoard and the progress events;
  keep the key set the same at every iteration).
* Batches are dicts ``{"image": (B,1,Z,Y,X) float, "label": (B,1,Z,Y,X) long, "case": [ids]}``; the
  unlabeled batch has no ``"label"`` and is ``None`` when ``uses_unlabeled`` is False. Ignore unknown keys.
* ``after_step(iteration)`` runs after the optimiser step (EMA teacher updates, memory-bank pushes).
* ``inference_models()`` names the models whose softmax is averaged at validation and inference.
* ``init_model_sources(package_models)`` maps the method's U-Nets to the networks of a model package when a run
  starts from one (``TrainConfig.init_model``: fine-tuning, ``dvcl adapt``).
* ``extra_state()`` / ``load_extra_state()`` carry non-parameter tensors (memory banks, counters) through
  checkpoints (stored in ``last_state.pt``, read with ``torch.load(weights_only=True)``).
* Hyper-parameters live in a dataclass named by ``params_class``; ``cfg.method_params`` (a dict from YAML or
  ``--set key=value``) is parsed into ``self.params``; unknown keys raise :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from dvcl.errors import ConfigError
from dvcl.utils.fields import convert_field
from dvcl.utils.rampup import rampup_weight

if TYPE_CHECKING:  # pragma: no cover
    from dvcl.networks.unet import SegNet
    from dvcl.training.config import TrainConfig

log = logging.getLogger(__name__)

Batch = Dict[str, Any]


class Method:
    """Base class of every training method; subclasses register with ``@register_method("name")``.

    Class attributes:
        name: registry name (set by the decorator).
        params_class: dataclass of the method's hyper-parameters (``None``: the method has none).
        uses_unlabeled: False for labeled-only methods; the Trainer then builds no unlabeled loader.
        labeled_fraction: forces the labeled fraction (the "fully" supervised upper bound uses 1.0).
        needs_class_counts: the Trainer calls :meth:`set_class_counts` once after :meth:`setup` (class-balancing
            methods: CLD, DHC).
    """

    name: ClassVar[str] = ""
    citation: ClassVar[str] = ""  # set from dvcl.methods.catalog by @register_method
    params_class: ClassVar[Optional[type]] = None
    uses_unlabeled: ClassVar[bool] = True
    labeled_fraction: ClassVar[Optional[float]] = None
    needs_class_counts: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig, num_classes: int, device: torch.device) -> None:
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.params = self.parse_params(getattr(cfg, "method_params", None))
        self.models: Dict[str, nn.Module] = {}

    # ----------------------------------------------------------------------------------------- params
    @classmethod
    def parse_params(cls, values: Optional[Mapping[str, Any]]) -> Any:
        """Turn a dict of hyper-parameters into ``params_class`` (defaults for missing keys).

        Values given as strings (``--set lambda_c=0``) are converted to the field's type by the one rule of
        :func:`dvcl.utils.fields.convert_value`; ranges are checked by the dataclass (``validate_params``).
        Raises :class:`ConfigError` for unknown keys or unconvertible values.
        """
        if cls.params_class is not None and isinstance(values, cls.params_class):
            return values
        values = dict(values or {})
        if cls.params_class is None:
            if values:
                raise ConfigError(f"method '{cls.name}' takes no parameters, got {', '.join(sorted(values))}")
            return None
        fields = {f.name: f for f in dataclasses.fields(cls.params_class)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) for method '{cls.name}': {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(fields))}"
            )
        kwargs = {k: convert_field(cls.params_class, k, v, what="method parameter") for k, v in values.items()}
        try:
            params = cls.params_class(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid parameters for method '{cls.name}': {exc}") from exc
        return params

    @classmethod
    def default_params(cls) -> Dict[str, Any]:
        """The method's hyper-parameters with their defaults (written into config.yaml)."""
        return cls.params_to_dict(cls.parse_params({}))

    @staticmethod
    def params_to_dict(params: Any) -> Dict[str, Any]:
        if params is None:
            return {}
        d = dataclasses.asdict(params)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    # ----------------------------------------------------------------------------------------- models
    def new_network(self) -> SegNet:
        """A fresh :class:`SegNet` for this data set; successive calls draw different initial weights."""
        from dvcl.networks.unet import build_network

        return build_network(self.cfg.network, self.num_classes).to(self.device)

    def supervised_loss(self) -> nn.Module:
        """L_sup = ce_weight * CE + dice_weight * soft Dice with this method's weights (METHOD.md 3.1: 0.5 and 0.5
        when the method has no :class:`~dvcl.methods.params.SupervisedWeights`)."""
        from dvcl.losses.supervised import SupervisedLoss

        return SupervisedLoss(lambda_ce=float(getattr(self.params, "ce_weight", 0.5)),
                              lambda_dice=float(getattr(self.params, "dice_weight", 0.5)))

    def build_models(self) -> Dict[str, nn.Module]:
        """Create the method's models (override). Called once by :meth:`setup`."""
        raise NotImplementedError

    def setup(self) -> Dict[str, nn.Module]:
        """Build the models, move them to the device and keep them in ``self.models``."""
        models = self.build_models()
        if not models:
            raise ConfigError(f"method '{self.name}' built no model")
        self.models = {name: m.to(self.device) for name, m in models.items()}
        unknown = [n for n in self.inference_models() if n not in self.models]
        if unknown:
            raise ConfigError(f"method '{self.name}': inference models {unknown} are not among {list(self.models)}")
        return self.models

    def joint_batch(self, batch_l: Batch, batch_u: Optional[Batch]) -> Tuple[torch.Tensor, torch.Tensor, int, bool]:
        """Labeled then unlabeled images on the device in one tensor, so each model runs one forward pass.

        Returns:
            ``(x, y_l, n_l, has_u)``: images (B_l + B_u, 1, Z, Y, X), labels (B_l, 1, Z, Y, X) long, the number of
            labeled patches, and whether an unlabeled half is present.
        """
        x_l = batch_l["image"].to(self.device)
        y_l = batch_l["label"].to(self.device).long()
        has_u = batch_u is not None and batch_u["image"].shape[0] > 0
        x = torch.cat([x_l, batch_u["image"].to(self.device)]) if has_u else x_l
        return x, y_l, x_l.shape[0], has_u

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the optimiser updates: every ``requires_grad`` parameter of every model, once."""
        seen = set()
        for model in self.models.values():
            for p in model.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def train(self) -> None:
        """Training mode for all models (EMA teachers may override to stay in eval mode)."""
        for m in self.models.values():
            m.train()

    def eval(self) -> None:
        for m in self.models.values():
            m.eval()

    # ----------------------------------------------------------------------------------------- training
    def compute_loss(
        self, batch_l: Batch, batch_u: Optional[Batch], iteration: int
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Total loss of one iteration and its terms as floats (override)."""
        raise NotImplementedError

    def after_step(self, iteration: int) -> None:
        """Hook after the optimiser step of ``iteration`` (0-based); default: nothing."""

    def set_class_counts(self, counts: torch.Tensor) -> None:
        """Hook for ``needs_class_counts`` methods: voxels per class (C,) over this run's labeled training cases
        (read them with :meth:`checked_class_counts`)."""
        raise NotImplementedError(f"method '{self.name}' declares needs_class_counts but does not take them")

    def checked_class_counts(self, counts: Any) -> torch.Tensor:
        """``counts`` as a float64 CPU vector of ``num_classes`` entries (:class:`ConfigError` otherwise)."""
        counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1).cpu()
        if counts.numel() != self.num_classes:
            raise ConfigError(f"class counts must have {self.num_classes} entries, got {counts.numel()}")
        return counts.clone()

    def inference_models(self) -> List[str]:
        """Models averaged (mean softmax) at validation and inference; default: all."""
        return list(self.models)

    def init_model_sources(self, package_models: List[str]) -> Dict[str, str]:
        """Which network of a model package initialises which of this method's models (``cfg.init_model``).

        Default: every U-Net (:class:`~dvcl.networks.SegNet`) takes the package network of the same name (DVCL
        and CPS from an A+B package: A<-A, B<-B), else the package's first network (B<-A from a one-network
        package; a student and its EMA teacher both <-A, so the teacher starts equal to the student as
        :func:`dvcl.methods.ema.make_teacher` makes it). Other models (SDF heads, discriminators) are not in a
        package and keep their fresh initialisation. Override where a method pairs models differently.
        """
        from dvcl.networks.unet import SegNet

        if not package_models:
            return {}
        return {name: name if name in package_models else package_models[0]
                for name, model in self.models.items() if isinstance(model, SegNet)}

    def state_modules(self) -> Dict[str, Union[nn.Module, torch.Tensor]]:
        """Training-only state the checkpoints carry (override): memory banks and queues as modules (every
        buffer, persistent or not, is saved as ``"<name>.<buffer>"``) and plain tensors (counters, as
        ``"<name>"``). Not models: they are never exported. Default: none."""
        return {}

    def _state_tensors(self) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for name, obj in self.state_modules().items():
            if isinstance(obj, torch.Tensor):
                out[name] = obj
            else:
                out.update({f"{name}.{key}": buf for key, buf in obj.named_buffers()})
        return out

    def extra_state(self) -> Dict[str, torch.Tensor]:
        """Non-parameter tensors to checkpoint: those of :meth:`state_modules` (copies)."""
        return {key: t.detach().clone() for key, t in self._state_tensors().items()}

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state` returned, in place (shapes must match this run's configuration)."""
        if not state:
            return
        expected = self._state_tensors()
        unknown = sorted(set(state) - set(expected))
        if unknown:
            raise ConfigError(f"method '{self.name}' got extra state {unknown} it does not know")
        missing = sorted(set(expected) - set(state))
        if missing:
            raise ConfigError(f"method '{self.name}': the checkpoint lacks its state {missing}")
        for key, target in expected.items():
            if tuple(state[key].shape) != tuple(target.shape):
                raise ConfigError(f"method '{self.name}': {key} in the checkpoint has shape "
                                  f"{tuple(state[key].shape)}, this run expects {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(state[key])

    # ----------------------------------------------------------------------------------------- helpers
    def progress(self, iteration: int) -> float:
        """Fraction of training done at ``iteration`` (for ramp-ups), in [0, 1]."""
        total = max(1, int(self.cfg.iterations))
        return min(1.0, max(0.0, iteration / total))

    def rampup_weight(self, weight: float, rampup_fraction: float, iteration: int,
                      warmup_fraction: float = 0.0) -> float:
        """``weight`` ramped up (sigmoid) over ``rampup_fraction`` of this run, after an optional supervised-only
        ``warmup_fraction``: every method's loss schedule (:func:`dvcl.utils.rampup.rampup_weight`)."""
        return rampup_weight(weight, iteration, int(self.cfg.iterations), rampup_fraction, warmup_fraction)

    def named_models(self) -> Iterator[Tuple[str, nn.Module]]:
        return iter(self.models.items())

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Mean softmax of the inference models for a batch (what sliding-window validation calls)."""
        probs = None
        names = self.inference_models()
        for n in names:
            model = self.models[n]
            logits = model.segment(x) if hasattr(model, "segment") else model(x)[0]
            p = torch.softmax(logits.float(), dim=1)
            probs = p if probs is None else probs + p
        return probs / len(names)
