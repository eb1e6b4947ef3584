"""Prompts for the generators: per-task templates and per-class modifier lists.

Templates (the paper's, Sec. 3 "Details of image generation"):

============ ===========================================================
task         template
============ ===========================================================
cifar        ``a photo of {modifier} {class}``
imagenet     ``a photo of {class}``
utkface      ``Portrait face photo of {race} {gender}, {age} year old``
waterbirds   ``The photo of {bird} in {place}``
plain        ``a photo of {class}``
============ ===========================================================

Placeholders: ``{class}`` and ``{group}`` (the cell's names, underscores shown as spaces),
``{modifier}`` (one of the class's modifiers), any key of ``cell.attributes`` (a list value,
e.g. UTKFace's ``age``, is sampled from), and the task's aliases (utkface: ``race`` = group,
``gender`` = class; waterbirds: ``bird`` = class, ``place`` = group). Every random choice is
drawn from the image's own seed, so a prompt depends only on (run seed, cell, index).

Modifier lists ship as editable JSON files next to this module: ``modifiers_cifar10.json`` and
``modifiers_cifar100.json`` (20 distinct modifiers per class, written for this project).
"""
from __future__ import annotations

import json
import re
import string
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import SynaugError

HERE = Path(__file__).resolve().parent

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray "
    "road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar "
    "sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle "
    "wardrobe whale willow_tree wolf woman worm").split()

BUILTIN_MODIFIERS = {"cifar10": (HERE / "modifiers_cifar10.json", CIFAR10_CLASSES),
                     "cifar100": (HERE / "modifiers_cifar100.json", CIFAR100_CLASSES)}


@dataclass(frozen=True)
class Task:
    template: str
    aliases: Mapping[str, str] = field(default_factory=dict)  # placeholder -> "class" | "group"


TASKS = {
    "cifar": Task("a photo of {modifier} {class}"),
    "imagenet": Task("a photo of {class}"),
    "utkface": Task("Portrait face photo of {race} {gender}, {age} year old",
                    {"race": "group", "gender": "class"}),
    "waterbirds": Task("The photo of {bird} in {place}", {"bird": "class", "place": "group"}),
    "plain": Task("a photo of {class}"),
}


def display_name(name: str) -> str:
    """How a class / group name appears in a prompt: underscores become spaces."""
    return " ".join(str(name).replace("_", " ").split())


def placeholders(template: str) -> list[str]:
    """Field names used in ``template`` (``"{class}"`` -> ``["class"]``)."""
    try:
        names = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise SynaugError(f"prompt template {template!r} is malformed: {e}") from None
    for n in names:
        if not n or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n):
            raise SynaugError(f"prompt template {template!r}: bad placeholder {{{n}}} "
                              "(use names like {class}, {modifier}, {age})")
    return names


def without_modifier(template: str) -> str:
    """Drop ``{modifier}`` from a template: ``a photo of {modifier} {class}`` -> ``a photo of {class}``.

    This is Table 1 row (a) of the paper (no modifiers).
    """
    return " ".join(re.sub(r"\{modifier\}", "", template).split())


def _load_class_lists(path: Path, what: str) -> dict[str, list[str]]:
    if not path.is_file():
        raise SynaugError(f"{what} file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SynaugError(f"{what} file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not data:
        raise SynaugError(f"{what} file {path} must map class names to lists of strings")
    out = {}
    for cls, items in data.items():
        if not isinstance(items, list) or not items or not all(isinstance(s, str) and s.strip() for s in items):
            raise SynaugError(f"{what} file {path}: class {cls!r} needs a non-empty list of non-empty strings")
        items = [" ".join(s.split()) for s in items]
        if len(set(items)) != len(items):
            dup = next(s for s in items if items.count(s) > 1)
            raise SynaugError(f"{what} file {path}: class {cls!r} lists {dup!r} twice")
        out[str(cls)] = items
    return out


def modifiers(source: str | Path, classes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Per-class modifier lists.

    Parameters
    ----------
    source : str or path
        ``"cifar10"`` / ``"cifar100"`` (the shipped lists) or a JSON file
        ``{"class name": ["modifier", ...], ...}``.
    classes : sequence of str, optional
        The classes the prompts are for. A user file must then name only these classes and
        cover every one (a misspelt class is an error, not a silently unused entry); a
        built-in list is restricted to them and must cover them.

    Returns
    -------
    dict
        class name -> list of distinct modifier strings.
    """
    builtin = BUILTIN_MODIFIERS.get(str(source))
    path = builtin[0] if builtin else Path(source)
    if not builtin and not path.suffix == ".json" and not path.exists():
        raise SynaugError(f"unknown modifiers {str(source)!r}: use cifar10, cifar100, none or a .json file")
    data = _load_class_lists(path, "modifiers")
    if classes is None:
        return data
    classes = [str(c) for c in classes]
    if builtin:
        data = {c: v for c, v in data.items() if c in classes}
    else:
        unknown = [c for c in data if c not in classes]
        if unknown:
            raise SynaugError(f"modifiers file {path} names unknown class {unknown[0]!r} "
                              f"(classes: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
    missing = [c for c in classes if c not in data]
    if missing:
        raise SynaugError(f"modifiers {str(source)!r} have no entry for class {missing[0]!r}; "
                          "give a modifiers file that covers every class, or modifiers: none")
    return {c: data[c] for c in classes}


def builtin_modifiers_for(classes: Sequence[str]) -> str | None:
    """Name of the shipped modifier list that covers all ``classes``, if any."""
    for name, (_, names) in BUILTIN_MODIFIERS.items():
        if set(classes) <= set(names):
            return name
    return None


def class_prompts(path: str | Path, classes: Sequence[str]) -> dict[str, list[str]]:
    """A user prompt file ``{"class": ["full prompt", ...]}``; unknown class names are errors.

    Classes the file leaves out use the template.
    """
    path = Path(path)
    data = _load_class_lists(path, "prompts")
    unknown = [c for c in data if c not in classes]
    if unknown:
        raise SynaugError(f"prompts file {path} names unknown class {unknown[0]!r}")
    for items in data.values():
        for p in items:
            placeholders(p)
    return data


def _sub_seed(seed: int, name: str) -> np.random.Generator:
    # one stream per placeholder: adding a placeholder never changes the others' draws
    return np.random.default_rng([int(seed) & (2**63 - 1), zlib.crc32(name.encode())])


class PromptBuilder:
    """Render the prompt of one image from its cell and its seed.

    Parameters
    ----------
    classes : list of str
        Plan class names (for validation of modifier / prompt files).
    task : str
        Key of ``TASKS``; picks the template and aliases.
    template : str, optional
        User template replacing the task's.
    modifiers : dict, optional
        class -> modifiers (see :func:`modifiers`). ``None`` drops ``{modifier}`` from the template.
    prompts : dict, optional
        class -> full prompts (see :func:`class_prompts`); one is picked per image.
    """

    def __init__(self, classes: Sequence[str], task: str = "cifar", template: str | None = None,
                 modifiers: dict[str, list[str]] | None = None, prompts: dict[str, list[str]] | None = None):
        if task not in TASKS:
            raise SynaugError(f"unknown prompt task {task!r} (choose from {', '.join(TASKS)})")
        self.classes = list(classes)
        self.aliases = dict(TASKS[task].aliases)
        t = template if template is not None else TASKS[task].template
        self.template = t if modifiers is not None else without_modifier(t)
        placeholders(self.template)
        self.modifiers = modifiers
        self.prompts = prompts or {}

    def prompt(self, cell, seed: int) -> str:
        """The prompt for an image of ``cell`` (a :class:`synaug.plan.Cell`) with per-image ``seed``."""
        if cell.class_name in self.prompts:
            options = self.prompts[cell.class_name]
            template = options[int(_sub_seed(seed, "prompt").integers(len(options)))]
        else:
            template = self.template
        values = {}
        for name in placeholders(template):
            values[name] = self._value(name, cell, seed)
        return " ".join(template.format_map(values).split())

    def _value(self, name: str, cell, seed: int) -> str:
        source = self.aliases.get(name, name)
        if source == "class":
            return display_name(cell.class_name)
        if source == "group":
            if cell.group < 0 or not cell.group_name:
                raise SynaugError(f"prompt placeholder {{{name}}} needs a group, but cell {cell.key} has none")
            return display_name(cell.group_name)
        if source == "modifier":
            mods = (self.modifiers or {}).get(cell.class_name)
            if not mods:
                raise SynaugError(f"no modifiers for class {cell.class_name!r}")
            return mods[int(_sub_seed(seed, "modifier").integers(len(mods)))]
        attrs = cell.attributes or {}
        if source not in attrs:
            known = ["class", "group", "modifier"] + list(self.aliases) + list(attrs)
            raise SynaugError(f"prompt placeholder {{{name}}} is unknown for cell {cell.key} "
                              f"(known: {', '.join(dict.fromkeys(known))})")
        v = attrs[source]
        if isinstance(v, (list, tuple)):
            if not v:
                raise SynaugError(f"cell {cell.key}: attribute {source!r} is an empty list")
            v = v[int(_sub_seed(seed, source).integers(len(v)))]
        return display_name(v)

    def check(self, cells) -> None:
        """Render one prompt per cell so a bad template fails before any image is made."""
        for c in cells:
            if c.synthetic > 0:
                self.prompt(c, 0)


__all__ = ["CIFAR10_CLASSES", "CIFAR100_CLASSES", "TASKS", "Task", "PromptBuilder", "modifiers",
           "class_prompts", "builtin_modifiers_for", "display_name", "placeholders", "without_modifier"]
