"""Prompt templates and the shipped modifier lists."""
import json

import pytest

from synaug.errors import SynaugError
from synaug.plan import Cell
from synaug.prompts import (CIFAR10_CLASSES, CIFAR100_CLASSES, TASKS, PromptBuilder, class_prompts, modifiers,
                            without_modifier)


def _cell(label, name, group=-1, gname="", **attrs):
    return Cell(label, name, 0, 1, group, gname, {"class": name, **attrs})


def test_cifar100_modifiers_cover_all_classes_with_20_distinct():
    mods = modifiers("cifar100")
    assert list(mods) == CIFAR100_CLASSES
    assert len(mods) == 100 and CIFAR100_CLASSES[:3] == ["apple", "aquarium_fish", "baby"]
    assert CIFAR100_CLASSES[-1] == "worm" and CIFAR100_CLASSES[58] == "pickup_truck"
    for name, lst in mods.items():
        assert len(lst) == 20 and len(set(lst)) == 20, name
        assert all(isinstance(m, str) and m.strip() == m and m for m in lst), name
    # the lists are written per class, not one list repeated
    assert len({tuple(v) for v in mods.values()}) == 100


def test_cifar10_modifiers():
    mods = modifiers("cifar10")
    assert list(mods) == CIFAR10_CLASSES
    assert all(len(v) == 20 == len(set(v)) for v in mods.values())


def test_user_modifier_file_unknown_and_missing_class(tmp_path):
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"cat": ["fluffy"], "dgo": ["wet"]}))
    with pytest.raises(SynaugError, match="unknown class 'dgo'"):
        modifiers(f, ["cat", "dog"])
    f.write_text(json.dumps({"cat": ["fluffy"]}))
    with pytest.raises(SynaugError, match="no entry for class 'dog'"):
        modifiers(f, ["cat", "dog"])
    f.write_text(json.dumps({"cat": ["fluffy", "fluffy"], "dog": ["wet"]}))
    with pytest.raises(SynaugError, match="twice"):
        modifiers(f, ["cat", "dog"])
    f.write_text(json.dumps({"cat": ["fluffy", "sleepy"], "dog": ["wet"]}))
    assert modifiers(str(f), ["cat", "dog"]) == {"cat": ["fluffy", "sleepy"], "dog": ["wet"]}
    with pytest.raises(SynaugError, match="unknown modifiers"):
        modifiers("cifar1000")
    # the built-in list restricted to a subset of its classes
    assert list(modifiers("cifar10", ["cat", "dog"])) == ["cat", "dog"]


def test_cifar_template_uses_class_modifier_deterministically():
    mods = modifiers("cifar100")
    b = PromptBuilder(CIFAR100_CLASSES, "cifar", modifiers=mods)
    cell = _cell(1, "aquarium_fish")
    prompts = [b.prompt(cell, s) for s in range(200)]
    assert prompts == [b.prompt(cell, s) for s in range(200)]
    used = {p[len("a photo of "):-len(" aquarium fish")] for p in prompts}
    assert all(p.startswith("a photo of ") and p.endswith(" aquarium fish") for p in prompts)
    assert used <= set(mods["aquarium_fish"]) and len(used) >= 15  # draws spread over the 20


def test_no_modifiers_is_table1_row_a():
    assert without_modifier(TASKS["cifar"].template) == "a photo of {class}"
    b = PromptBuilder(CIFAR10_CLASSES, "cifar", modifiers=None)
    assert b.prompt(_cell(0, "airplane"), 7) == "a photo of airplane"
    b = PromptBuilder(["maple_tree"], "cifar", modifiers=None)
    assert b.prompt(_cell(0, "maple_tree"), 1) == "a photo of maple tree"


def test_task_templates():
    assert PromptBuilder(["tench"], "imagenet").prompt(_cell(0, "tench"), 3) == "a photo of tench"
    ages = [20, 20, 20, 71]
    b = PromptBuilder(["male", "female"], "utkface")
    cell = _cell(1, "female", 2, "Asian", age=ages)
    out = [b.prompt(cell, s) for s in range(300)]
    assert all(p.startswith("Portrait face photo of Asian female, ") and p.endswith(" year old") for p in out)
    got = [int(p.split(", ")[1].split()[0]) for p in out]
    assert set(got) == {20, 71}
    assert 0.6 < got.count(20) / len(got) < 0.9  # sampled from the group's age distribution (3/4)
    w = PromptBuilder(["landbird", "water_bird"], "waterbirds")
    assert w.prompt(_cell(1, "water_bird", 0, "land"), 0) == "The photo of water bird in land"


def test_user_template_and_errors():
    b = PromptBuilder(["cat"], "cifar", template="a {modifier} {class} drawn in ink",
                      modifiers={"cat": ["tiny"]})
    assert b.prompt(_cell(0, "cat"), 0) == "a tiny cat drawn in ink"
    bad = PromptBuilder(["cat"], "plain", template="a photo of {colour} {class}")
    with pytest.raises(SynaugError, match=r"\{colour\} is unknown"):
        bad.check([_cell(0, "cat")])
    with pytest.raises(SynaugError, match="needs a group"):
        PromptBuilder(["bird"], "waterbirds").prompt(_cell(0, "bird"), 0)
    with pytest.raises(SynaugError, match="malformed"):
        PromptBuilder(["cat"], "plain", template="a photo of {class")


def test_prompt_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"cat": ["a cat on a sofa", "a {class} in snow"]}))
    p = class_prompts(f, ["cat", "dog"])
    b = PromptBuilder(["cat", "dog"], "plain", prompts=p)
    seen = {b.prompt(_cell(0, "cat"), s) for s in range(50)}
    assert seen == {"a cat on a sofa", "a cat in snow"}
    assert b.prompt(_cell(1, "dog"), 0) == "a photo of dog"  # not in the file: template
    f.write_text(json.dumps({"kat": ["x"]}))
    with pytest.raises(SynaugError, match="unknown class 'kat'"):
        class_prompts(f, ["cat", "dog"])
