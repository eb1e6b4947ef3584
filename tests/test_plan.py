"""The uniformization planner: property tests over random manifests, plan files, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synaug.cli import main
from synaug.errors import SynaugError
from synaug.manifest import Manifest
from synaug.plan import Cell, Plan, apply_plan, make_plan, plan_totals

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def rows_manifest(cc: np.ndarray, grouped: bool, val: int = 1, ages: bool = False) -> Manifest:
    """Train rows with counts ``cc`` (C x G) plus ``val`` rows per class (never planned)."""
    C, G = cc.shape
    rows = []
    for c in range(C):
        for g in range(G):
            for i in range(int(cc[c, g])):
                r = {"path": f"train/{c}/{g}/{i}.png", "label": c, "split": "train", "group": g if grouped else -1}
                if ages:
                    r["age"] = (c * 7 + g * 3 + i * 11) % 90
                rows.append(r)
        for i in range(val):
            r = {"path": f"val/{c}/{i}.png", "label": c, "split": "val", "group": 0 if grouped else -1}
            if ages:
                r["age"] = 1
            rows.append(r)
    return Manifest.from_records(rows, [f"c{c}" for c in range(C)], {"real": "/data"},
                                 [f"g{g}" for g in range(G)] if grouped else None)


@st.composite
def count_tables(draw, grouped: bool):
    C = draw(st.integers(1, 6))
    G = draw(st.integers(1, 4)) if grouped else 1
    flat = draw(st.lists(st.integers(0, 25), min_size=C * G, max_size=C * G))
    cc = np.array(flat, dtype=int).reshape(C, G)
    if cc.sum() == 0:  # at least one train row, else planning is an error (tested below)
        cc[draw(st.integers(0, C - 1)), draw(st.integers(0, G - 1))] = 1
    return cc


def _common_checks(plan: Plan, m: Manifest) -> None:
    assert all(c.real >= 0 and c.synthetic >= 0 for c in plan.cells)
    assert plan.total_real == len(m.split("train")) - len(plan.drop_real)
    plan.check()


# ---------------------------------------------------------------------------- properties
@PROPS
@given(cc=count_tables(grouped=False), use_target=st.booleans(), target=st.integers(0, 30))
def test_class_mode_equalizes_classes(cc, use_target, target):
    m = rows_manifest(cc, grouped=False)
    counts = cc[:, 0]
    plan = make_plan(m, "class", target=target if use_target else None)
    _common_checks(plan, m)
    assert [c.real for c in plan.cells] == counts.tolist()
    totals = plan_totals(plan)
    if not use_target:
        assert (totals == counts.max()).all()
    else:
        below = counts <= target
        assert (totals[below] == target).all()
        assert (totals[~below] == counts[~below]).all()  # classes above the target are untouched
        assert all(c.synthetic == 0 for c, b in zip(plan.cells, below) if not b)
    assert plan.total_synthetic == int(totals.sum() - counts.sum())


@PROPS
@given(cc=count_tables(grouped=True), use_target=st.booleans(), target=st.integers(0, 30),
       equalize=st.booleans())
def test_cell_mode_equalizes_classes_within_every_group(cc, use_target, target, equalize):
    m = rows_manifest(cc, grouped=True)
    plan = make_plan(m, "cell", target=target if use_target else None, equalize_groups=equalize)
    _common_checks(plan, m)
    C, G = cc.shape
    assert len(plan.cells) == C * G
    tot = np.zeros((C, G), int)
    for c in plan.cells:
        assert c.real == cc[c.label, c.group]
        assert c.attributes["class"] == c.class_name and c.attributes["group"] == c.group_name
        tot[c.label, c.group] = c.real + c.synthetic
    if use_target:
        assert (tot[cc <= target] == target).all() and (tot[cc > target] == cc[cc > target]).all()
    elif equalize:
        assert (tot == cc.max()).all()  # every cell equal
    else:
        assert (tot == cc.max(axis=0, keepdims=True)).all()  # within each group all classes equal


@PROPS
@given(cc=count_tables(grouped=True))
def test_spurious_mode_fills_every_cell_to_the_largest(cc):
    m = rows_manifest(cc, grouped=True)
    plan = make_plan(m, "spurious")
    _common_checks(plan, m)
    assert (plan_totals(plan) == cc.max()).all() and len(plan.cells) == cc.size


@PROPS
@given(cc=count_tables(grouped=True))
def test_agnostic_mode_balances_classes_ignoring_groups(cc):
    m = rows_manifest(cc, grouped=True)
    plan = make_plan(m, "agnostic")
    _common_checks(plan, m)
    assert [c.group for c in plan.cells] == [-1] * cc.shape[0]
    assert [c.real for c in plan.cells] == cc.sum(axis=1).tolist()
    assert (plan_totals(plan) == cc.sum(axis=1).max()).all()


@PROPS
@given(cc=count_tables(grouped=False), data=st.data(), seed=st.integers(0, 1000))
def test_replace_class_replaces_exactly_k_classes(cc, data, seed):
    m = rows_manifest(cc, grouped=False)
    C = cc.shape[0]
    k = data.draw(st.integers(0, C))
    counts = cc[:, 0]
    plan = make_plan(m, "replace-class", k=k, seed=seed)
    _common_checks(plan, m)
    chosen = [m.classes.index(n) for n in plan.params["replaced_classes"]]
    assert len(set(chosen)) == k
    for c in plan.cells:
        if c.label in chosen:
            assert (c.real, c.synthetic) == (0, counts[c.label])
        else:
            assert (c.real, c.synthetic) == (counts[c.label], 0)
    assert (plan_totals(plan) == counts).all()  # replacement keeps every class size
    train = m.split("train").df
    assert plan.drop_real == sorted(train[train["label"].isin(chosen)]["path"])
    again = make_plan(m, "replace-class", k=k, seed=seed)
    assert again.params["replaced_classes"] == plan.params["replaced_classes"]
    kept = apply_plan(m, plan)
    assert kept.class_counts("train").tolist() == [c.real for c in plan.cells]
    assert kept.class_counts("val").tolist() == m.class_counts("val").tolist()


@PROPS
@given(cc=count_tables(grouped=False), ratio=st.floats(0, 1), seed=st.integers(0, 1000))
def test_replace_ratio_replaces_floor_r_n_per_class(cc, ratio, seed):
    m = rows_manifest(cc, grouped=False)
    counts = cc[:, 0]
    plan = make_plan(m, "replace-ratio", ratio=ratio, seed=seed)
    _common_checks(plan, m)
    expected = np.floor(ratio * counts + 1e-9).astype(int)
    assert [c.synthetic for c in plan.cells] == expected.tolist()
    assert [c.real for c in plan.cells] == (counts - expected).tolist()
    dropped = pd.Series(plan.drop_real).str.split("/").str[1].astype(int) if plan.drop_real else pd.Series([], dtype=int)
    assert np.bincount(dropped, minlength=len(counts)).tolist() == expected.tolist()
    assert len(set(plan.drop_real)) == len(plan.drop_real)
    assert make_plan(m, "replace-ratio", ratio=ratio, seed=seed).drop_real == plan.drop_real
    assert apply_plan(m, plan).class_counts("train").tolist() == (counts - expected).tolist()


def test_replace_ratio_seed_changes_which_rows():
    m = rows_manifest(np.array([[40], [30]]), grouped=False)
    a = make_plan(m, "replace-ratio", ratio=0.5, seed=0).drop_real
    b = make_plan(m, "replace-ratio", ratio=0.5, seed=1).drop_real
    assert len(a) == len(b) == 35 and a != b


def test_replace_class_by_name_and_errors():
    m = rows_manifest(np.array([[5], [3], [2]]), grouped=False)
    plan = make_plan(m, "replace-class", classes=["c2", "c0"])
    assert [(c.real, c.synthetic) for c in plan.cells] == [(0, 5), (3, 0), (0, 2)]
    with pytest.raises(SynaugError, match="unknown class name 'dog'"):
        make_plan(m, "replace-class", classes=["dog"])
    with pytest.raises(SynaugError, match="0 <= k <= 3"):
        make_plan(m, "replace-class", k=4)
    with pytest.raises(SynaugError, match="0 <= ratio <= 1"):
        make_plan(m, "replace-ratio", ratio=1.5)
    with pytest.raises(SynaugError, match="unknown plan mode"):
        make_plan(m, "fancy")
    with pytest.raises(SynaugError, match="non-negative integer"):
        make_plan(m, "class", target=-3)
    with pytest.raises(SynaugError, match="needs a manifest with groups"):
        make_plan(m, "cell")
    with pytest.raises(SynaugError, match="no train rows"):
        make_plan(m.split("val"), "class")


def test_empty_class_is_filled_entirely():
    plan = make_plan(rows_manifest(np.array([[4], [0], [1]]), grouped=False), "class")
    assert [(c.real, c.synthetic) for c in plan.cells] == [(4, 0), (0, 4), (1, 3)]


def test_cell_attributes_carry_ages():
    m = rows_manifest(np.array([[2, 1], [0, 3]]), grouped=True, ages=True)
    plan = make_plan(m, "cell")
    by_key = {c.key: c for c in plan.cells}
    train = m.split("train").df
    for key, c in by_key.items():
        ages = sorted(train[(train["label"] == c.label) & (train["group"] == c.group)]["age"])
        assert c.attributes.get("age", []) == ages
    assert by_key["1/0"].synthetic == 2 and "age" not in by_key["1/0"].attributes
    agn = make_plan(m, "agnostic")
    assert agn.cells[1].attributes["age"] == sorted(train[train["label"] == 1]["age"])


def test_waterbirds_group_is_the_place():
    """Waterbirds: group = place, shared by both classes. ``spurious`` fills every (bird, place)
    cell up to the largest; ``cell`` lifts, within every place, the other bird to the larger."""
    cc = np.array([[50, 3], [2, 20]])
    rows = [{"path": f"{c}/{g}/{i}.jpg", "label": c, "group": g, "split": "train"}
            for c in range(2) for g in range(2) for i in range(cc[c, g])]
    m = Manifest.from_records(rows, ["landbird", "waterbird"], {"real": "/wb"}, ["land", "water"])
    plan = make_plan(m, "spurious")
    assert [(c.key, c.class_name, c.group_name, c.real, c.synthetic) for c in plan.cells] == [
        ("0/0", "landbird", "land", 50, 0), ("0/1", "landbird", "water", 3, 47),
        ("1/0", "waterbird", "land", 2, 48), ("1/1", "waterbird", "water", 20, 30)]
    assert [c.synthetic for c in make_plan(m, "cell").cells] == [0, 17, 48, 0]
    assert [c.synthetic for c in make_plan(m, "agnostic").cells] == [0, 31]


# ---------------------------------------------------------------------------- plan files
def _cells_tuple(plan: Plan):
    return [(c.key, c.label, c.class_name, c.real, c.synthetic, c.group, c.group_name, c.attributes)
            for c in plan.cells]


@PROPS
@given(cc=count_tables(grouped=True), mode=st.sampled_from(["cell", "spurious", "agnostic"]))
def test_plan_json_and_csv_round_trip(tmp_path, cc, mode):
    m = rows_manifest(cc, grouped=True, ages=True)
    plan = make_plan(m, mode, seed=3)
    back = Plan.read(plan.write(tmp_path / "p.json"))
    assert back == plan
    csv_back = Plan.read(plan.write(tmp_path / "p.csv"))
    assert _cells_tuple(csv_back) == _cells_tuple(plan)
    assert csv_back.total_synthetic == plan.total_synthetic


def test_replacement_plan_round_trips_as_json_only(tmp_path):
    m = rows_manifest(np.array([[6], [4]]), grouped=False)
    plan = make_plan(m, "replace-ratio", ratio=0.5, seed=1)
    back = Plan.read(plan.write(tmp_path / "p.json"))
    assert back.drop_real == plan.drop_real and back.params == plan.params
    with pytest.raises(SynaugError, match="write it as .json"):
        plan.write(tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def _plan_json(tmp_path, edit) -> Path:
    m = rows_manifest(np.array([[3], [1]]), grouped=False)
    f = make_plan(m, "class").write(tmp_path / "p.json")
    d = json.loads(f.read_text())
    edit(d)
    f.write_text(json.dumps(d))
    return f


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d["cells"][1].update(synthetic=-2), "negative synthetic count -2"),
    (lambda d: d["cells"][0].update(real=-1), "negative real count -1"),
    (lambda d: d["cells"][1].update(synthetic=2.5), "synthetic count must be an integer"),
    (lambda d: d["cells"][1].update(synthetic="2"), "synthetic count must be an integer"),
    (lambda d: d["cells"][1].update(synthetic=True), "synthetic count must be an integer"),
    (lambda d: d["cells"][1].update(class_name="dragon"), "unknown class 'dragon'"),
    (lambda d: d["cells"][1].update(label=7), "unknown class"),
    (lambda d: d["cells"].append(dict(d["cells"][0])), "cell 0 twice"),
    (lambda d: d["cells"][0].pop("real"), "malformed"),
    (lambda d: d.pop("classes"), "malformed"),
])
def test_plan_read_rejects_bad_json(tmp_path, edit, msg):
    f = _plan_json(tmp_path, edit)
    with pytest.raises(SynaugError) as e:
        Plan.read(f)
    assert msg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("col,value,msg", [("synthetic", "-4", "negative synthetic count -4"),
                                           ("synthetic", "1.5", "must be an integer"),
                                           ("real", "many", "must be an integer")])
def test_plan_read_rejects_bad_csv(tmp_path, col, value, msg):
    m = rows_manifest(np.array([[3], [1]]), grouped=False)
    f = make_plan(m, "class").write(tmp_path / "p.csv")
    df = pd.read_csv(f, dtype=str)
    df.loc[1, col] = value
    df.to_csv(f, index=False)
    with pytest.raises(SynaugError) as e:
        Plan.read(f)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_plan_read_missing_and_wrong_suffix(tmp_path):
    with pytest.raises(SynaugError, match="not found"):
        Plan.read(tmp_path / "none.json")
    (tmp_path / "p.yaml").write_text("x")
    with pytest.raises(SynaugError, match=".json or .csv"):
        Plan.read(tmp_path / "p.yaml")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SynaugError, match="malformed"):
        Plan.read(tmp_path / "broken.json")


def test_plan_check_rejects_hand_made_bad_cells():
    plan = Plan("class", ["a"], [Cell(0, "a", 1, 0, group=2, group_name="x")])
    with pytest.raises(SynaugError, match="unknown group 2"):
        plan.check()


# ---------------------------------------------------------------------------- CLI
def test_cli_plan_on_an_image_folder(image_folder, tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = main(["plan", "--dataset", "imagefolder", "--data-root", str(image_folder), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "plan (class): 10 real + 8 synthetic" in printed and f"wrote {out}" in printed
    plan = Plan.read(out)
    assert [(c.class_name, c.real, c.synthetic) for c in plan.cells] == [("cat", 6, 0), ("dog", 3, 3), ("fox", 1, 5)]
    rc = main(["plan", "--dataset", "imagefolder", "--data-root", str(image_folder), "--target", "4",
               "--out", str(tmp_path / "plan.csv")])
    assert rc == 0
    df = pd.read_csv(tmp_path / "plan.csv")
    assert df["total"].tolist() == [6, 4, 4] and df["synthetic"].tolist() == [0, 1, 3]


def test_cli_plan_from_a_manifest_file(image_folder, tmp_path, capsys):
    from synaug.data import load_dataset

    load_dataset("imagefolder", str(image_folder)).write(tmp_path / "m.parquet")
    rc = main(["plan", "--manifest", str(tmp_path / "m.parquet"), "--mode", "replace-class", "--k", "1",
               "--seed", "0", "--out", str(tmp_path / "r.json")])
    assert rc == 0
    plan = Plan.read(tmp_path / "r.json")
    assert len(plan.params["replaced_classes"]) == 1 and plan.drop_real


@pytest.mark.parametrize("argv,msg", [
    (["--mode", "cell"], "needs a manifest with groups"),
    (["--mode", "replace-ratio", "--ratio", "2"], "0 <= ratio <= 1"),
    (["--target", "-1"], "non-negative integer"),
    (["--dataset-opt", "bogus=1"], "has no option 'bogus'"),
])
def test_cli_plan_bad_input_exit_2_one_line(image_folder, tmp_path, capsys, argv, msg):
    out = tmp_path / "p.json"
    rc = main(["plan", "--dataset", "imagefolder", "--data-root", str(image_folder), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("synaug: error: ") and msg in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_plan_subprocess(image_folder, tmp_path):
    exe = Path(sys.executable).with_name("synaug")
    ok = subprocess.run([str(exe), "plan", "--dataset", "imagefolder", "--data-root", str(image_folder),
                         "--out", str(tmp_path / "p.json")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert Plan.read(tmp_path / "p.json").total_synthetic == 8
    bad = subprocess.run([str(exe), "plan", "--manifest", str(tmp_path / "missing.csv"), "--out",
                          str(tmp_path / "q.json")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("synaug: error: manifest file not found") and bad.stderr.count("\n") == 1
    assert not (tmp_path / "q.json").exists()
