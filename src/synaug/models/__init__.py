"""Image classifiers split into an encoder f (features) and a linear head g.

Every model built here is a :class:`Classifier`: ``model.encoder`` maps images to a
``(N, model.num_features)`` feature matrix, ``model.head`` maps features to logits, and
``model.spec`` records how to rebuild it (checkpoints store it next to the weights).

>>> m = create_model("resnet32", num_classes=10)
>>> m.num_features
64

Registered names: ``resnet32`` (and ``resnet20/44/56/110``) for 32x32 inputs,
``resnet18`` / ``resnet34`` / ``resnet50`` from torchvision (``cifar_stem=True`` swaps the
7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv), and any timm model as
``timm/<name>`` (or a bare name timm knows) when timm is installed.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SynaugError

HEADS = ("linear", "cosine")
_MODELS: dict[str, Callable[..., "Classifier"]] = {}


class CosineLinear(nn.Module):
    """Cosine-similarity head (LDAM-DRW's ``NormedLinear``): logits in [-1, 1].

    Stored as ``weight`` of shape (out, in) like :class:`torch.nn.Linear`, so last-layer code
    treats both heads alike. Scale the logits in the loss (LDAM uses ``s = 30``).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # same init as LDAM-DRW: uniform, each class vector renormalised to unit length
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()


def make_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "cosine":
        return CosineLinear(in_features, num_classes)
    raise SynaugError(f"unknown head {kind!r} (one of: {', '.join(HEADS)})")


def reset_head(head: nn.Module, generator_seed: int | None = None) -> None:
    """Re-initialise a head in place (seeded when ``generator_seed`` is given)."""
    with torch.random.fork_rng(devices=[]):
        if generator_seed is not None:
            torch.manual_seed(generator_seed)
        head.reset_parameters()


class Classifier(nn.Module):
    """``forward(x) = head(encoder(x))``.

    Parameters
    ----------
    encoder : nn.Module
        Maps a batch of images to ``(N, num_features)``.
    num_features : int
        Feature dimension.
    num_classes : int
        Number of outputs of the head.
    head : {"linear", "cosine"}
        Kind of head g.
    """

    def __init__(self, encoder: nn.Module, num_features: int, num_classes: int, head: str = "linear"):
        super().__init__()
        self.encoder = encoder
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.head = make_head(head, self.num_features, self.num_classes)
        self.head_kind = head
        self.spec: dict = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output f(x), shape ``(N, num_features)``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def register_model(name: str):
    """Decorator: ``factory(num_classes, **kw) -> Classifier`` becomes ``create_model(name)``."""
    def deco(fn):
        _MODELS[name] = fn
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, **kw) -> Classifier:
    """Build a registered model (or a timm model) with a fresh head.

    Parameters
    ----------
    name : str
        A registered name (:func:`list_models`), ``timm/<name>``, or a bare timm name.
    num_classes : int
        Outputs of the head g.
    **kw
        Factory options, e.g. ``width`` (resnet32), ``cifar_stem`` (torchvision),
        ``head`` ("linear" / "cosine"), ``pretrained`` (only weights already cached locally).

    Returns
    -------
    Classifier
        With ``spec = {"name", "num_classes", "kwargs"}`` for :func:`model_from_spec`.
    """
    if num_classes < 1:
        raise SynaugError(f"num_classes must be >= 1, got {num_classes}")
    if name in _MODELS:
        model = _MODELS[name](num_classes, **kw)
    elif name.startswith("timm/") or _timm_knows(name):
        model = _timm_model(name.removeprefix("timm/"), num_classes, **kw)
    else:
        raise SynaugError(f"unknown model {name!r} (registered: {', '.join(list_models())}; "
                          f"or timm/<name> with timm installed)")
    model.spec = {"name": name, "num_classes": int(num_classes), "kwargs": dict(kw)}
    return model


def model_from_spec(spec: dict) -> Classifier:
    return create_model(spec["name"], int(spec["num_classes"]), **spec.get("kwargs", {}))


# ---------------------------------------------------------------- factories
def _cifar_resnet(depth: int):
    def factory(num_classes: int, width: int = 16, head: str = "linear") -> Classifier:
        from .resnet_cifar import CifarResNetEncoder

        enc = CifarResNetEncoder(depth, width)
        model = Classifier(enc, enc.num_features, num_classes, head)
        if head == "linear":  # LDAM-DRW initialises the linear layer Kaiming-normal too
            nn.init.kaiming_normal_(model.head.weight)
        return model
    return factory


for _d in (20, 32, 44, 56, 110):
    register_model(f"resnet{_d}")(_cifar_resnet(_d))


def _torchvision_resnet(arch: str):
    def factory(num_classes: int, cifar_stem: bool = False, head: str = "linear",
                pretrained: bool = False) -> Classifier:
        import torchvision

        ctor = getattr(torchvision.models, arch)
        weights = None
        if pretrained:
            weights = torchvision.models.get_model_weights(arch).DEFAULT
        try:
            net = ctor(weights=weights)
        except Exception as e:  # no network: a missing download is a user-fixable problem
            raise SynaugError(f"cannot load pretrained {arch} weights: {type(e).__name__}: {e}") from None
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return Classifier(net, dim, num_classes, head)
    return factory


for _arch in ("resnet18", "resnet34", "resnet50"):
    register_model(_arch)(_torchvision_resnet(_arch))


def _timm_knows(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))


def _timm_model(name: str, num_classes: int, head: str = "linear", pretrained: bool = False,
                **kw) -> Classifier:
    try:
        import timm
    except ImportError:
        raise SynaugError(f"model {name!r} needs timm (pip install timm)") from None
    if not timm.is_model(name):
        raise SynaugError(f"timm has no model {name!r}")
    try:
        # num_classes=0 makes timm return pooled features (its classifier becomes Identity)
        net = timm.create_model(name, pretrained=pretrained, num_classes=0, **kw)
    except Exception as e:
        raise SynaugError(f"cannot build timm model {name!r}: {type(e).__name__}: {e}") from None
    return Classifier(net, net.num_features, num_classes, head)


def head_parameters(model: Classifier) -> list[nn.Parameter]:
    return list(model.head.parameters())


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


__all__ = ["Classifier", "CosineLinear", "HEADS", "create_model", "model_from_spec", "register_model",
           "list_models", "make_head", "reset_head", "count_parameters", "head_parameters"]
