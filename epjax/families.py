"""The one list of model families: name → config class, model class, size presets, builder and file loader.

Everything that needs to know which families exist reads this registry: :func:`epjax.train.build_model` (and so
:func:`epjax.train.load`, which rebuilds a saved model from its family name), the command line's ``--family``
choices, the experiments and the demo. A new family is a module plus one :class:`Family` entry here
(docs/architecture.md §8).

>>> [f.name for f in trainable()]
['rnn', 'transformer', 'ssm', 'markov']
>>> model = new_model("rnn", 4, size="tiny", cell="lstm")
>>> model.config.hidden_size, model.config.cell
(16, 'lstm')
>>> get("llama").config_class.__name__
'Config'
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from types import MappingProxyType, ModuleType
from typing import Any

from epjax._checks import check_positive_int

# Preset sizes (width, layers). Width is the RNN hidden size, the Transformer embedding size and the SSM's d_model.
_NEURAL_SIZES = MappingProxyType({"tiny": (16, 1), "small": (32, 1), "medium": (64, 2)})


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the family's name, as stored in saved models (``model.family``) and given to ``--family``.
        module_name: the module holding the family's ``Config`` and ``Model`` (imported on first use).
        summary: one line for help texts.
        model_class_name: the name of the family's model class in its module.
        sizes: size presets ``name -> (width, layers)`` for :func:`new_model`; empty when the family has none.
        trainable: listed among the families ``epjax train`` offers.
        loader: ``"module:function"`` reading a model from a file (``function(path, ...) -> (model, params,
            ...)``), or ``None`` when the family's only files are epjax's own (:func:`epjax.train.load`).
    """

    name: str
    module_name: str
    summary: str
    model_class_name: str = "Model"
    sizes: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    trainable: bool = True
    loader: str | None = None

    @property
    def module(self) -> ModuleType:
        """The family's module."""
        return importlib.import_module(self.module_name)

    @property
    def config_class(self) -> type:
        """The family's frozen-dataclass configuration."""
        return self.module.Config

    @property
    def model_class(self) -> type:
        """The family's model class (a :class:`epjax.DiscreteModel`)."""
        return getattr(self.module, self.model_class_name)

    def build(self, config: Any, *, temperature: float = 1.0) -> Any:
        """The family's model for ``config`` (an instance of :attr:`config_class`)."""
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"`config` of the {self.name!r} family must be a {self.module_name}.Config, got {config!r}."
            )
        return self.module.Model(config, temperature=temperature)

    def load_function(self) -> Callable[..., Any]:
        """The function :attr:`loader` names (``ValueError`` when the family has no file loader)."""
        if self.loader is None:
            raise ValueError(f"the {self.name!r} family has no file loader; its models are read by epjax.train.load.")
        module_name, function = self.loader.split(":")
        return getattr(importlib.import_module(module_name), function)


_REGISTRY: dict[str, Family] = {
    family.name: family
    for family in (
        Family("rnn", "epjax.rnn", "recurrent networks: Elman, GRU, LSTM", sizes=_NEURAL_SIZES),
        Family(
            "transformer",
            "epjax.transformer",
            "GPT-style decoder",
            sizes=_NEURAL_SIZES,
            loader="epjax.pretrained:load_gpt2",
        ),
        Family("ssm", "epjax.ssm", "state-space models: S4D, Mamba", sizes=_NEURAL_SIZES),
        Family("markov", "epjax.markov", "first-order Markov chain (exact EP)", model_class_name="MarkovChain"),
        Family(
            "llama",
            "epjax.llama",
            "Llama-family decoder (SmolLM2, Llama, Mistral-style)",
            trainable=False,
            loader="epjax.pretrained:load_gguf",
        ),
    )
}

FAMILIES: Mapping[str, Family] = MappingProxyType(_REGISTRY)
"""Every family epjax can build, save and load, by name."""


def register(family: Family) -> Family:
    """Add a family of your own to the registry, so that :func:`epjax.train.load` rebuilds its saved models.

    Its module (``family.module_name``, ``"__main__"`` for a script) must define ``Config`` (a dataclass) and
    ``Model(config, *, temperature=1.0)``; its models carry ``family = family.name`` and ``config``.

    Raises:
        ValueError: ``family`` is not a :class:`Family`, or its name is already taken by another entry.
    """
    if not isinstance(family, Family):
        raise ValueError(f"`family` must be an epjax.families.Family, got {family!r}.")
    if not family.name.isidentifier():
        raise ValueError(f"a family's name must be an identifier, got {family.name!r}.")
    existing = _REGISTRY.get(family.name)
    if existing is not None and existing != family:
        raise ValueError(f"the family name {family.name!r} is already registered ({existing.module_name}).")
    _REGISTRY[family.name] = family
    return family


def names() -> tuple[str, ...]:
    """The names of every registered family."""
    return tuple(FAMILIES)


def trainable() -> tuple[Family, ...]:
    """The families ``epjax train`` offers, in the order of its help text."""
    return tuple(f for f in FAMILIES.values() if f.trainable)


def get(name: Any) -> Family:
    """The registered family called ``name`` (``ValueError`` naming the known ones otherwise)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model spec must name a family, got {name!r}.")
    if name not in FAMILIES:
        known = ", ".join(FAMILIES)
        if importlib.util.find_spec(f"epjax.{name}") is not None:
            raise ValueError(
                f"module epjax.{name} does not define Model and Config: {name!r} is not a model family "
                f"(the families are {known})."
            )
        raise ValueError(f"unknown model family {name!r}; the families are {known}.")
    return FAMILIES[name]


def new_model(
    family: str,
    vocab_size: int,
    *,
    context_length: int | None = None,
    size: str = "small",
    width: int | None = None,
    layers: int | None = None,
    cell: str = "gru",
    ssm_kind: str = "mamba",
    num_heads: int | None = None,
) -> Any:
    """A fresh, untrained model of a trainable family at a preset size, with optional overrides.

    Args:
        family: ``"rnn"``, ``"transformer"``, ``"ssm"`` or ``"markov"`` (a chain fitted directly: the
            well-specified reference for Markov data).
        vocab_size: alphabet size ``V``.
        context_length: longest sequence the Transformer handles (required for it, ignored otherwise).
        size: a preset of the family's :attr:`Family.sizes` (``"tiny"``, ``"small"`` or ``"medium"``).
        width: overrides the preset width (RNN hidden size, Transformer embedding size, SSM ``d_model``).
        layers: overrides the preset number of layers.
        cell: RNN cell, ``"gru"``, ``"lstm"`` or ``"elman"``.
        ssm_kind: ``"mamba"`` (selective) or ``"s4d"`` (linear time-invariant).
        num_heads: Transformer attention heads (default: 2, or 4 from width 64).

    Returns:
        The model (``epjax.rnn.Model``, ``epjax.transformer.Model``, ``epjax.ssm.Model`` or
        ``epjax.markov.MarkovChain``).
    """
    choices = tuple(f.name for f in trainable())
    if family not in choices:
        raise ValueError(f"`family` must be one of {choices}, got {family!r}.")
    entry = FAMILIES[family]
    vocab_size = check_positive_int("vocab_size", vocab_size)
    module = entry.module
    if family == "markov":
        return module.MarkovChain(vocab_size)
    if size not in entry.sizes:
        raise ValueError(f"`size` must be one of {tuple(entry.sizes)}, got {size!r}.")
    preset_width, preset_layers = entry.sizes[size]
    width = preset_width if width is None else check_positive_int("width", width)
    layers = preset_layers if layers is None else check_positive_int("layers", layers)
    if family == "rnn":
        return module.Model(module.Config(vocab_size, hidden_size=width, num_layers=layers, cell=cell))
    if family == "ssm":
        d_state = 8 if width <= 32 else 16
        return module.Model(module.Config(vocab_size, kind=ssm_kind, d_model=width, num_layers=layers, d_state=d_state))
    if context_length is None:
        raise ValueError("`context_length` is required for a Transformer (the longest sequence it handles).")
    context_length = check_positive_int("context_length", context_length)
    heads = (4 if width >= 64 else 2) if num_heads is None else check_positive_int("num_heads", num_heads)
    if width % heads:
        raise ValueError(f"the Transformer width {width} must be divisible by its number of heads {heads}.")
    return module.Model(
        module.Config(vocab_size, context_length=context_length, num_layers=layers, num_heads=heads, embed_size=width)
    )


def model_spec(model: Any) -> dict:
    """``{"family", "config", "temperature"}``: enough to rebuild ``model`` with :func:`build_model`."""
    family = getattr(model, "family", None)
    config = getattr(model, "config", None)
    if family is None or config is None or not dataclasses.is_dataclass(config):
        raise ValueError(
            f"`model` must be an epjax family model with `family` and a dataclass `config`, got {model!r}."
        )
    return {"family": family, "config": dataclasses.asdict(config), "temperature": float(model.temperature)}


def build_model(spec: Mapping[str, Any]) -> Any:
    """Rebuild a model from :func:`model_spec`'s dictionary through the registry."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"model spec must be a mapping with 'family' and 'config', got {spec!r}.")
    entry = get(spec.get("family"))
    config = spec.get("config")
    if not isinstance(config, Mapping):
        raise ValueError(f"model spec of family {entry.name!r} must hold a 'config' mapping, got {config!r}.")
    try:
        built = entry.config_class(**config)
    except TypeError as err:
        raise ValueError(f"model spec of family {entry.name!r} has an invalid config: {err}.") from None
    return entry.build(built, temperature=spec.get("temperature", 1.0))


__all__ = [
    "FAMILIES",
    "Family",
    "build_model",
    "get",
    "model_spec",
    "names",
    "new_model",
    "register",
    "trainable",
]
