"""The README's "Your own data" section, run as written: every ``yaml`` block headed by a
``# <file>`` comment is written to that file, then every ``synaug ...`` line of its ``bash``
blocks is run, in order, in a folder holding the user's files the section describes
(``photos/`` as an ImageFolder with train/test folders, ``photos.csv`` naming the same images,
``more-photos/<class>/`` extra images). The commands and configs come from README.md itself,
so the section cannot drift from what works.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synaug.cli import main
from synaug.manifest import Manifest

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parents[1] / "README.md"
TRAIN = {"cat": 12, "dog": 6, "fox": 3}
TEST = 4


def section() -> str:
    text = README.read_text()
    assert "\n## Your own data\n" in text
    return text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(), flags=re.S)


def commands() -> list[list[str]]:
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                assert argv[0] == "synaug", line
                out.append(argv[1:])
    return out


def test_section_documents_the_schedule_and_model_size_keys():
    text = " ".join(section().split())
    for key in ("`model.width` 16", "`schedule.warmup_epochs` 5", "`schedule.milestones` [0.8, 0.9]",
                "`schedule.factors` [0.01, 0.0001]", "fractions of `epochs`"):
        assert key in text, key


def test_section_has_the_walkthrough():
    files = [b.splitlines()[0] for b in blocks("yaml")]
    assert files == ["# my-run.yaml", "# gen.yaml", "# train.yaml", "# ft.yaml"]
    verbs = [c[0] for c in commands()]
    assert verbs.count("run") == 3 and {"inspect", "report", "plan", "generate", "manifest", "train", "finetune",
                                        "evaluate"} <= set(verbs)


@pytest.fixture
def user_files(tmp_path):
    rng = np.random.RandomState(0)
    rows = []
    for split, counts in (("train", TRAIN), ("test", dict.fromkeys(TRAIN, TEST))):
        for name, n in counts.items():
            for i in range(n):
                size = (int(rng.randint(28, 48)), int(rng.randint(28, 48)))  # your photos differ in size
                rel = f"{split}/{name}/{i:03d}.png"
                (tmp_path / "photos" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / "photos" / rel)
                rows.append({"path": rel, "class_name": name, "split": split})
    pd.DataFrame(rows).to_csv(tmp_path / "photos.csv", index=False)
    for name in TRAIN:
        for i in range(max(TRAIN.values())):
            f = tmp_path / "more-photos" / name / f"{i:03d}.jpg"
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.randint(0, 256, (40, 40, 3), dtype=np.uint8)).save(f)
    return tmp_path


def test_readme_own_data_section_runs_as_written(user_files, monkeypatch):
    monkeypatch.chdir(user_files)
    for block in blocks("yaml"):
        name = block.splitlines()[0].removeprefix("# ").strip()
        (user_files / name).write_text(block)
    for argv in commands():
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        assert rc == 0, (argv, err.getvalue()[-3000:])
    runs = user_files / "runs"
    mine = json.loads((runs / "mine" / "metrics.json").read_text())
    assert mine["real_train_counts"] == [11, 5, 2]        # one image per class carved for validation
    assert mine["train_counts_after"] == [11, 11, 11] and mine["generator"] == "pool:more-photos"
    hist = json.loads((runs / "mine" / "train" / "history.json").read_text())
    assert len(hist) == 40                                  # extended from 30 to 40 epochs
    lr = [h["lr"] for h in hist]                            # the short-run schedule decays (and is kept)
    assert lr[2:20] == pytest.approx([0.1] * 18) and lr[20:25] == pytest.approx([0.01] * 5)
    assert lr[25:] == pytest.approx([0.001] * 15)
    ce = json.loads((runs / "mine-ce" / "metrics.json").read_text())
    assert ce["synthetic"] == 0 and set(ce["results"]) == {"trained"}
    md = (runs / "compare" / "comparison.md").read_text()
    assert "| SYNAuG | finetuned |" in md and "| CE | trained |" in md
    # step by step: one manifest with real, synthetic and test rows; test rows only evaluated
    m = Manifest.read(runs / "M.parquet")
    assert set(m.df["source"]) == {"real", "synthetic"} and (m.df["split"] == "test").sum() == 3 * TEST
    summary = json.loads((runs / "train" / "summary.json").read_text())
    assert summary["num_train"] == 3 * 12 and summary["num_val"] == 0
    ev = json.loads((runs / "eval" / "metrics.json").read_text())
    assert ev["num_samples"] == 3 * TEST
