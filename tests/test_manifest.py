"""The manifest type: round trips, one-line validation errors, file verification, concat."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from synaug.errors import SynaugError
from synaug.manifest import COLUMNS, Manifest, check_relative_path


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture
def grouped(tmp_path):
    rows = [
        {"path": "a/0.png", "label": 0, "split": "train", "group": 1, "age": 30},
        {"path": "a/1.png", "label": 1, "split": "val", "group": 0, "age": 41},
        {"path": "b/2.png", "label": 2, "split": "test", "group": 1, "age": 7},
        {"path": "s/0.png", "label": 1, "split": "train", "group": 0, "source": "synthetic",
         "prompt": "a photo of dog", "seed": 12, "generator": "sd15", "age": 20},
    ]
    return Manifest.from_records(rows, ["cat", "dog", "fox"],
                                 {"real": tmp_path / "real", "synthetic": tmp_path / "syn"}, ["g0", "g1"])


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip_keeps_rows_names_roots_and_extra_columns(grouped, tmp_path, suffix):
    out = tmp_path / "runs" / f"m{suffix}"
    grouped.write(out)
    if suffix == ".csv":
        assert (tmp_path / "runs" / "m.csv.meta.json").is_file()
    back = Manifest.read(out)
    assert back.classes == grouped.classes and back.groups == grouped.groups
    pd.testing.assert_frame_equal(back.df, grouped.df, check_dtype=False)
    assert back.df["age"].tolist() == [30, 41, 7, 20]
    assert back.df["class_name"].tolist() == ["cat", "dog", "fox", "dog"]
    for k in ("real", "synthetic"):
        assert back.roots[k].resolve() == grouped.roots[k].resolve()
    assert [p.resolve() for p in back.abspaths()] == [p.resolve() for p in grouped.abspaths()]


def test_roots_are_stored_relative_so_a_run_folder_can_move(tmp_path):
    run = tmp_path / "run"
    m = Manifest.from_records([{"path": "x.png", "label": 0, "split": "train"}], ["a"], {"real": run / "data"})
    m.write(run / "m.csv")
    meta = json.loads((run / "m.csv.meta.json").read_text())
    assert meta["roots"]["real"] == "data"
    (run).rename(tmp_path / "moved")
    back = Manifest.read(tmp_path / "moved" / "m.csv")
    assert back.abspaths()[0].resolve() == (tmp_path / "moved" / "data" / "x.png").resolve()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_plain_table_takes_names_from_columns_and_its_folder_as_root(tmp_path, suffix):
    df = pd.DataFrame({"path": ["x/1.jpg", "x/2.jpg", "y/3.jpg"], "label": [0, 2, 2],
                       "class_name": ["ant", "", "cow"], "split": ["train", "train", "test"],
                       "group": [0, 1, -1], "group_name": ["young", "old", ""]})
    f = tmp_path / f"plain{suffix}"
    df.to_csv(f, index=False) if suffix == ".csv" else df.to_parquet(f, index=False)
    m = Manifest.read(f)
    assert m.classes == ["ant", "class_1", "cow"]
    assert m.groups == ["young", "old"]
    assert m.df["class_name"].tolist() == ["ant", "cow", "cow"]
    assert m.roots["real"] == tmp_path
    assert m.class_counts("train").tolist() == [1, 0, 1]
    # a row without a group (-1) is in no cell (it used to be counted in group 0)
    assert m.cell_counts(None).tolist() == [[1, 0], [0, 0], [0, 1]]
    other = Manifest.read(f, root=tmp_path / "elsewhere")
    assert other.abspaths()[0] == tmp_path / "elsewhere" / "x/1.jpg"


def test_missing_optional_columns_get_defaults(tmp_path):
    m = Manifest(pd.DataFrame({"path": ["p.png"], "label": [0], "split": ["train"]}), ["a"], {"real": tmp_path})
    assert list(m.df.columns[: len(COLUMNS)]) == COLUMNS
    row = m.df.iloc[0]
    assert (row["group"], row["source"], row["seed"], row["prompt"], row["class_name"]) == (-1, "real", -1, "", "a")


# ---------------------------------------------------------------------------- validation errors
def _df(**cols):
    base = {"path": ["a.png", "b.png"], "label": [0, 1], "split": ["train", "train"]}
    base.update(cols)
    return pd.DataFrame(base)


@pytest.mark.parametrize("drop", ["path", "label", "split"])
def test_missing_required_column(tmp_path, drop):
    with pytest.raises(SynaugError) as e:
        Manifest(_df().drop(columns=[drop]), ["a", "b"], {"real": tmp_path})
    assert f"missing column {drop!r}" in one_line_error(e)


@pytest.mark.parametrize("drop,missing", [(["path"], "path"), (["label"], "label")])
def test_missing_column_in_a_plain_file(tmp_path, drop, missing):
    # a plain table may leave out `split` (all rows train) and `label` when `class_name` names
    # every row (tests/test_own_data.py), but never `path`, nor both label and class_name
    f = tmp_path / "m.csv"
    _df().drop(columns=drop).to_csv(f, index=False)
    with pytest.raises(SynaugError) as e:
        Manifest.read(f)
    assert f"missing column {missing!r}" in one_line_error(e)


@pytest.mark.parametrize("label", [2, -1])
def test_label_out_of_range(tmp_path, label):
    with pytest.raises(SynaugError) as e:
        Manifest(_df(label=[0, label]), ["a", "b"], {"real": tmp_path})
    assert f"label {label} out of range [0, 2)" in one_line_error(e)


def test_label_out_of_range_after_editing_a_written_csv(tmp_path):
    m = Manifest(_df(), ["a", "b"], {"real": tmp_path})
    f = m.write(tmp_path / "m.csv")
    df = pd.read_csv(f)
    df.loc[1, "label"] = 5
    df.loc[1, "class_name"] = ""
    df.to_csv(f, index=False)
    with pytest.raises(SynaugError) as e:
        Manifest.read(f)
    assert "label 5 out of range" in one_line_error(e)


def test_non_integer_label(tmp_path):
    with pytest.raises(SynaugError) as e:
        Manifest(_df(label=[0, 1.5]), ["a", "b"], {"real": tmp_path})
    assert "must hold integers" in one_line_error(e)


def test_duplicate_path(tmp_path):
    with pytest.raises(SynaugError) as e:
        Manifest(_df(path=["x/a.png", "x/./a.png"]), ["a", "b"], {"real": tmp_path})
    assert "duplicate path 'x/a.png'" in one_line_error(e)


def test_same_path_in_real_and_synthetic_is_not_a_duplicate(tmp_path):
    m = Manifest(_df(path=["a.png", "a.png"], source=["real", "synthetic"]), ["a", "b"],
                 {"real": tmp_path / "r", "synthetic": tmp_path / "s"})
    assert [p.parent.name for p in m.abspaths()] == ["r", "s"]


@pytest.mark.parametrize("bad", ["../x.png", "a/../../x.png", "/etc/passwd", "..\\x.png"])
def test_path_escaping_the_root(tmp_path, bad):
    with pytest.raises(SynaugError) as e:
        Manifest(_df(path=["ok.png", bad]), ["a", "b"], {"real": tmp_path})
    assert "escapes the data root" in one_line_error(e)


def test_path_escaping_the_root_in_a_file(tmp_path):
    f = tmp_path / "m.csv"
    _df(path=["ok.png", "../../secret.png"]).to_csv(f, index=False)
    with pytest.raises(SynaugError) as e:
        Manifest.read(f)
    assert "escapes the data root" in one_line_error(e)


def test_check_relative_path_normalises():
    assert check_relative_path("a/./b\\c.png") == "a/b/c.png"


@pytest.mark.parametrize("col,value,msg", [("split", "training", "split 'training'"),
                                           ("source", "fake", "source 'fake'")])
def test_unknown_split_or_source(tmp_path, col, value, msg):
    with pytest.raises(SynaugError) as e:
        Manifest(_df(**{col: ["train" if col == "split" else "real", value]}), ["a", "b"], {"real": tmp_path})
    assert msg in one_line_error(e)


def test_class_name_must_match_label(tmp_path):
    with pytest.raises(SynaugError) as e:
        Manifest(_df(class_name=["a", "a"]), ["a", "b"], {"real": tmp_path})
    assert "does not match label 1" in one_line_error(e)


def test_group_without_names_and_group_out_of_range(tmp_path):
    with pytest.raises(SynaugError) as e:
        Manifest(_df(group=[0, 1]), ["a", "b"], {"real": tmp_path})
    assert "no group names" in one_line_error(e)
    with pytest.raises(SynaugError) as e:
        Manifest(_df(group=[0, 2]), ["a", "b"], {"real": tmp_path}, ["g0", "g1"])
    assert "group 2 out of range" in one_line_error(e)


def test_synthetic_rows_need_a_root(tmp_path):
    with pytest.raises(SynaugError) as e:
        Manifest(_df(source=["real", "synthetic"]), ["a", "b"], {"real": tmp_path})
    assert "no root folder" in one_line_error(e)


def test_read_errors_are_one_line(tmp_path):
    with pytest.raises(SynaugError) as e:
        Manifest.read(tmp_path / "nope.csv")
    assert "not found" in one_line_error(e)
    bad = tmp_path / "m.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SynaugError) as e:
        Manifest.read(bad)
    assert "cannot read manifest" in one_line_error(e)
    with pytest.raises(SynaugError) as e:
        Manifest(_df(), ["a", "b"], {"real": tmp_path}).write(tmp_path / "m.txt")
    assert ".parquet or .csv" in one_line_error(e)


# ---------------------------------------------------------------------------- file verification
def _files_manifest(tmp_path, write_image, n=3):
    for i in range(n):
        write_image(tmp_path / f"{i}.png", seed=i)
    return Manifest(pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": [0] * n,
                                  "split": ["train"] * n}), ["a"], {"real": tmp_path})


def test_verify_files_accepts_good_images(tmp_path, write_image):
    m = _files_manifest(tmp_path, write_image)
    m.validate(verify_files=True, expected_size=(32, 32))
    m.write(tmp_path / "m.parquet")
    Manifest.read(tmp_path / "m.parquet", verify_files=True)


def test_verify_files_missing_file(tmp_path, write_image):
    m = _files_manifest(tmp_path, write_image)
    (tmp_path / "1.png").unlink()
    with pytest.raises(SynaugError) as e:
        m.validate(verify_files=True)
    assert "not found" in one_line_error(e) and "1.png" in str(e.value)
    m.validate()  # without verification the rows alone are fine


def test_verify_files_truncated_and_garbage(tmp_path, write_image):
    m = _files_manifest(tmp_path, write_image)
    data = (tmp_path / "2.png").read_bytes()
    (tmp_path / "2.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(SynaugError) as e:
        m.validate(verify_files=True)
    assert "unreadable image" in one_line_error(e) and "2.png" in str(e.value)
    (tmp_path / "2.png").write_bytes(b"not an image at all")
    with pytest.raises(SynaugError) as e:
        m.write(tmp_path / "m.csv")
        Manifest.read(tmp_path / "m.csv", verify_files=True)
    assert "unreadable image" in one_line_error(e)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_verify_files_non_rgb(tmp_path, write_image, mode):
    m = _files_manifest(tmp_path, write_image)
    write_image(tmp_path / "0.png", mode=mode)
    with pytest.raises(SynaugError) as e:
        m.validate(verify_files=True)
    assert f"mode {mode!r}, expected RGB" in one_line_error(e)


def test_verify_files_wrong_size(tmp_path, write_image):
    m = _files_manifest(tmp_path, write_image)
    write_image(tmp_path / "1.png", size=(40, 30))
    m.validate(verify_files=True)  # no size asked for
    with pytest.raises(SynaugError) as e:
        m.validate(verify_files=True, expected_size=(32, 32))
    assert "is 40x30, expected 32x32" in one_line_error(e)


# ---------------------------------------------------------------------------- views and concat
def test_select_split_and_counts(grouped):
    assert len(grouped.split("train")) == 2
    assert grouped.class_counts("train").tolist() == [1, 1, 0]
    assert grouped.class_counts(None).tolist() == [1, 2, 1]
    assert grouped.cell_counts("train").tolist() == [[0, 1], [1, 0], [0, 0]]
    assert len(grouped.with_source("synthetic")) == 1


def test_concat_joins_real_and_synthetic(tmp_path):
    real = Manifest(_df(), ["a", "b"], {"real": tmp_path / "r"})
    syn = Manifest(_df(path=["s0.png", "s1.png"], source=["synthetic"] * 2), ["a", "b"],
                   {"synthetic": tmp_path / "s", "real": tmp_path / "other"})
    both = Manifest.concat([real, syn])
    assert len(both) == 4
    assert both.roots == {"real": tmp_path / "r", "synthetic": tmp_path / "s"}
    assert both.class_counts("train").tolist() == [2, 2]


def test_concat_rejects_mismatches(tmp_path):
    a = Manifest(_df(), ["a", "b"], {"real": tmp_path / "r"})
    with pytest.raises(SynaugError) as e:
        Manifest.concat([a, Manifest(_df(path=["c.png", "d.png"]), ["a", "x"], {"real": tmp_path / "r"})])
    assert "different class or group names" in one_line_error(e)
    with pytest.raises(SynaugError) as e:
        Manifest.concat([a, Manifest(_df(path=["c.png", "d.png"]), ["a", "b"], {"real": tmp_path / "q"})])
    assert "different real roots" in one_line_error(e)
    with pytest.raises(SynaugError) as e:
        Manifest.concat([a, a])
    assert "duplicate path" in one_line_error(e)
    with pytest.raises(SynaugError):
        Manifest.concat([])
