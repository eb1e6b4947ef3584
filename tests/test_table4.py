"""Table 4 at CPU scale (the CIFAR-10 border proxy of Waterbirds), one meaning of "re-train",
and the step-3 validation sweep."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synaug.data import load_dataset
from synaug.data.spurious import ATTRIBUTES, COLOURS, SD_SPURIOUS_GENERATOR, paint_border
from synaug.errors import SynaugError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"train_per_class": 40, "val_per_cell": 5, "test_per_cell": 6}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    cache = tmp_path_factory.mktemp("spur")
    m = load_dataset("shared-cifar10-spurious", None, cache=str(cache / "real"), **SMALL)
    pool = load_dataset("shared-sd14-spurious", None, per_class=30, cache=str(cache / "sd"))
    return m, pool


def _rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_proxy_splits_follow_the_waterbirds_mould(proxy):
    m, _ = proxy
    assert m.classes == ["airplane", "automobile"] and m.groups == ATTRIBUTES == ["red", "blue"]
    counts = m.df.groupby(["split", "label", "group"]).size()
    # training: 95 % of each class on its majority attribute (airplane/red, automobile/blue)
    assert counts["train"].to_dict() == {(0, 0): 38, (0, 1): 2, (1, 0): 2, (1, 1): 38}
    assert set(counts["val"].tolist()) == {5} and len(counts["val"]) == 4        # balanced over cells
    assert set(counts["test"].tolist()) == {6} and len(counts["test"]) == 4
    assert set(m.df["source"]) == {"real"} and not m.df["path"].duplicated().any()
    # the attribute is painted on: border pixels carry the group's colour, the inside is the CIFAR image
    for _, r in m.df.groupby(["split", "group"]).head(1).iterrows():
        px = _rgb(m.roots["real"] / r["path"])
        colour = np.array(COLOURS[r["group_name"]])
        assert (px[:3] == colour).all() and (px[-3:] == colour).all() and (px[:, :3] == colour).all()
        assert not (px[3:-3, 3:-3] == colour).all(axis=-1).all()


def test_proxy_is_deterministic_and_checks_its_options(proxy, tmp_path):
    m, _ = proxy
    again = load_dataset("shared-cifar10-spurious", None, cache=str(tmp_path / "again"), **SMALL)
    assert again.df[["path", "label", "group", "split"]].equals(m.df[["path", "label", "group", "split"]])
    other = load_dataset("shared-cifar10-spurious", None, cache=str(tmp_path / "other"), seed=1, **SMALL)
    assert set(other.df["path"]) != set(m.df["path"])
    with pytest.raises(SynaugError, match="two different CIFAR-10 classes"):
        load_dataset("shared-cifar10-spurious", None, classes=["airplane"])
    with pytest.raises(SynaugError, match="unknown CIFAR-10 class 'boat'"):
        load_dataset("shared-cifar10-spurious", None, classes=["airplane", "boat"])
    with pytest.raises(SynaugError, match="majority"):
        load_dataset("shared-cifar10-spurious", None, majority=0.2)
    with pytest.raises(SynaugError, match="test_per_cell"):
        load_dataset("shared-cifar10-spurious", None, test_per_cell=600)


def test_paint_border():
    a = np.zeros((6, 6, 3), np.uint8)
    b = paint_border(a, (1, 2, 3), 2)
    assert (b[:2] == [1, 2, 3]).all() and (b[:, -2:] == [1, 2, 3]).all() and (b[2:4, 2:4] == 0).all()
    assert (a == 0).all()  # a copy


def test_sd_pool_carries_both_attributes(proxy):
    _, pool = proxy
    assert set(pool.df["source"]) == {"synthetic"} and set(pool.df["generator"]) == {SD_SPURIOUS_GENERATOR}
    assert pool.df.groupby(["label", "group"]).size().tolist() == [15, 15, 15, 15]
    r = pool.df.iloc[0]
    px = _rgb(pool.roots["synthetic"] / r["path"])
    assert (px[0, 0] == COLOURS[r["group_name"]]).all()
    assert r["cifake_file"].startswith(f"sd14/{r['class_name']}/")


def test_spurious_plan_fills_the_minority_cells_with_sd_images_of_the_minority_attribute(proxy, tmp_path):
    from synaug.generate import GenerateConfig, generate
    from synaug.plan import make_plan

    m, _ = proxy
    plan = make_plan(m, "spurious")
    need = {(c.class_name, c.group_name): c.synthetic for c in plan.cells}
    assert need == {("airplane", "red"): 0, ("airplane", "blue"): 36, ("automobile", "red"): 36,
                    ("automobile", "blue"): 0}
    # a pool too small for the plan says so in one line
    small = GenerateConfig(backend="pool", pool={"dataset": "shared-sd14-spurious",
                                                 "options": {"per_class": 30, "cache": str(tmp_path / "p")}})
    with pytest.raises(SynaugError, match="cannot fill class 'airplane', group 'blue'"):
        generate(plan, small, tmp_path / "small", progress=False)
    cfg = GenerateConfig(backend="pool", pool={"dataset": "shared-sd14-spurious",
                                               "options": {"per_class": 200, "cache": str(tmp_path / "p2")}})
    syn = generate(plan, cfg, tmp_path / "syn", progress=False)
    got = syn.df.groupby(["class_name", "group_name"]).size().to_dict()
    assert got == {("airplane", "blue"): 36, ("automobile", "red"): 36}
    assert set(syn.df["generator"]) == {SD_SPURIOUS_GENERATOR}
    for _, r in syn.df.groupby(["class_name", "group_name"]).head(2).iterrows():
        assert (_rgb(syn.roots["synthetic"] / r["path"])[1, 1] == COLOURS[r["group_name"]]).all()


def test_cell_accuracy_is_worst_cell_and_plain_mean(tmp_path):
    from synaug.experiments.table4 import cell_accuracy

    df = pd.DataFrame({"label": [0, 0, 0, 0, 1, 1, 1, 1, 1, 1], "group": [0, 0, 1, 1, 0, 0, 1, 1, 1, 1],
                       "pred": [0, 0, 1, 0, 1, 0, 1, 1, 1, 0]})
    df.to_csv(tmp_path / "p.csv", index=False)
    worst, mean, cells = cell_accuracy(tmp_path / "p.csv")
    assert cells == {(0, 0): 1.0, (0, 1): 0.5, (1, 0): 0.5, (1, 1): 0.75}
    assert worst == 50.0 and mean == pytest.approx(70.0)


def test_one_meaning_of_retrain():
    """"re-train" is the re-initialised last layer trained on the balanced real subset, in every
    table and config; DFR is a method of its own."""
    from synaug.experiments import run_specs
    from synaug.run import load_run_config

    specs = run_specs("small")
    for name, raw in specs.items():
        ft = raw.get("finetune") or {}
        if "retrain" in name:
            assert ft.get("mode") == "retrain", name
        if ft.get("mode") == "dfr":
            assert "retrain" not in name and "synaug" not in name, name
    assert specs["t4_erm"]["finetune"]["mode"] == "dfr" and specs["t4_synaug"]["finetune"]["mode"] == "finetune"
    strip = lambda d: {k: v for k, v in d.items() if k not in ("finetune", "description")}  # noqa: E731
    assert strip(specs["t4_synaug"]) == strip(specs["t4_synaug_retrain"])   # one trained model, two last layers
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#") and re.search(r"re-?train", line, re.I) and "--set finetune.mode=" in line:
                assert "--set finetune.mode=retrain" in line, f"{path.name}: {line.strip()}"
    wb = load_run_config(ROOT / "configs/table4-waterbirds-dfr.yaml").finetune
    assert wb.mode == "dfr" and wb.dfr_data == "val" and wb.dfr_draws == 20


@pytest.mark.slow
def test_table4_and_step3_run_at_tiny_scale(tmp_path):
    """Both experiment modules end to end at the tiny scale (1 epoch, a few hundred images)."""
    from synaug.experiments import experiment, run_specs
    from synaug.experiments.common import Context, Runner

    mods = {n: experiment(n) for n in ("table4", "step3")}
    specs = run_specs("tiny", tuple(mods))
    reuse = {k: v for m in mods.values() for k, v in m.REUSE.items() if k in specs}
    runner = Runner(tmp_path / "runs", "tiny", 0, specs, reuse)
    ctx = Context("tiny", [0], tmp_path, specs)
    md, _ = mods["table4"].analyse([runner], ctx)
    text = "\n".join(md)
    assert "PROXY of Waterbirds" in text and "| DFR^Tr_Val (on the ERM model) |" in text
    assert "73.7 ± 3.04" in text and "Stable Diffusion 1.4 (CIFAKE), border painted by synaug" in text
    verdicts = re.findall(r"\*\*(holds here|does NOT hold here|holds on average, but not in every seed)\*\*", text)
    assert len(verdicts) == 7
    d = tmp_path / "runs" / "tiny" / "seed0"
    # SYNAuG re-train and fine-tune share one trained model; the ERM run used DFR^Tr_Val on validation rows
    assert (d / "t4_synaug" / "train" / "model.safetensors").read_bytes() == \
        (d / "t4_synaug_retrain" / "train" / "model.safetensors").read_bytes()
    import json

    assert json.loads((d / "t4_erm" / "finetune" / "finetune.json").read_text())["dfr"]["fit_on"] == "validation rows"
    md3, secs = mods["step3"].analyse([runner], ctx)
    text3 = "\n".join(md3)
    assert "**validation** mean-class accuracy" in text3 and "Best point:" in text3 and secs >= 0
    n_val = int(re.search(r"the validation split has (\d+) images", text3).group(1))
    assert n_val == specs["synaug"]["data"]["val_per_class"] * 10  # CIFAR-10
    sweep = json.loads((d / "step3_sweep.json").read_text())["result"]
    assert len(sweep["points"]) == 4 and all(0 <= p["mean_class"] <= 1 for p in sweep["points"])
