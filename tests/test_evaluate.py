"""Tests of the FROC evaluation and its matching rules (hand-made cases)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_calc.core.evaluate import (
    cluster_froc,
    froc,
    froc_summary,
    match_calcifications,
    match_clusters,
    plot_froc,
    sensitivity_at,
)


def dets(*rows, status=None):
    """Detections from (y_mm, x_mm, score) tuples."""
    df = pd.DataFrame(rows, columns=["y_mm", "x_mm", "score"])
    df["status"] = status if status is not None else "candidate"
    return df


def truth_mc(*rows):
    """Truth MCs from (y_mm, x_mm, diameter_mm[, cluster_id]) tuples."""
    out = []
    for k, r in enumerate(rows):
        out.append({"calc_id": k, "y_mm": r[0], "x_mm": r[1], "diameter_mm": r[2],
                    "cluster_id": r[3] if len(r) > 3 else -1})
    return out


def test_exact_match():
    m = match_calcifications(dets((10.0, 20.0, 0.9)), truth_mc((10.0, 20.0, 0.3)))
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 0)
    assert m["distance_mm"][0] == 0.0


@pytest.mark.parametrize(
    "diameter, offset, hit",
    [
        (0.3, 0.49, True),   # radius max(0.5, 0.3) = 0.5 mm
        (0.3, 0.51, False),
        (0.3, 0.50, True),   # on the boundary counts
        (0.8, 0.79, True),   # radius = diameter = 0.8 mm
        (0.8, 0.81, False),
    ],
)
def test_radius_just_inside_and_outside(diameter, offset, hit):
    # offset along a diagonal so both coordinates matter
    d = offset / np.sqrt(2)
    m = match_calcifications(dets((10.0 + d, 20.0 + d, 0.5)), truth_mc((10.0, 20.0, diameter)))
    assert m["tp"] == int(hit)
    assert m["fp"] == int(not hit)
    assert m["fn"] == int(not hit)


def test_fixed_radius():
    t = truth_mc((0.0, 0.0, 0.2))
    assert match_calcifications(dets((0.0, 0.9, 1.0)), t, radius_mm=1.0)["tp"] == 1
    assert match_calcifications(dets((0.0, 0.9, 1.0)), t)["tp"] == 0


def test_two_detections_on_one_truth_give_one_tp_one_fp():
    m = match_calcifications(dets((5.0, 5.0, 0.3), (5.1, 5.0, 0.8)), truth_mc((5.0, 5.0, 0.3)))
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 0)
    # greedy by score: the higher-scored detection is the TP even though it is farther
    assert list(m["is_tp"]) == [False, True]


def test_greedy_by_distance_on_equal_scores():
    m = match_calcifications(dets((5.3, 5.0, 0.5), (5.1, 5.0, 0.5)), truth_mc((5.0, 5.0, 0.3)))
    assert list(m["is_tp"]) == [False, True]


def test_one_detection_between_two_truths_matches_one():
    m = match_calcifications(dets((0.0, 0.3, 1.0)), truth_mc((0.0, 0.0, 0.3), (0.0, 0.7, 0.3)))
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1)
    assert m["matched_truth"][0] == 0  # the nearer one (0.3 mm away; truth 1 is 0.4 mm away)


def test_rejected_detections_are_ignored():
    d = dets((5.0, 5.0, 0.9), (20.0, 20.0, 0.8))
    d.loc[0, "status"] = "rejected"
    m = match_calcifications(d, truth_mc((5.0, 5.0, 0.3)))
    assert (m["tp"], m["fp"], m["fn"]) == (0, 1, 1)
    assert m["n_detections"] == 1
    d.loc[1, "status"] = "rejected"
    m = match_calcifications(d, truth_mc((5.0, 5.0, 0.3)))
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 1)
    # accepted and added count
    d["status"] = ["accepted", "added"]
    m = match_calcifications(d, truth_mc((5.0, 5.0, 0.3)))
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 0)


def test_empty_inputs():
    m = match_calcifications(dets(), truth_mc((1.0, 1.0, 0.2)))
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 1)
    m = match_calcifications(dets((1.0, 1.0, 0.2)), [])
    assert (m["tp"], m["fp"], m["fn"]) == (0, 1, 0)


def test_row_col_with_spacing():
    d = pd.DataFrame({"row": [100.0], "col": [50.0], "score": [1.0]})
    m = match_calcifications(d, truth_mc((10.0, 5.0, 0.3)), spacing_mm=0.1)
    assert m["tp"] == 1


def test_3d_depth_tolerance():
    t = [dict(calc_id=0, y_mm=1.0, x_mm=1.0, z_mm=10.0, diameter_mm=0.3, cluster_id=-1)]
    near = dets((1.0, 1.0, 1.0)).assign(z_mm=11.5)
    far = dets((1.0, 1.0, 1.0)).assign(z_mm=13.0)
    assert match_calcifications(near, t)["tp"] == 1
    assert match_calcifications(far, t)["tp"] == 0


def test_froc_hand_made_and_monotone():
    # image 1: truths A, B; detections: A (0.9), FP (0.8), B (0.4), FP (0.3)
    # image 2: truth C; detections: FP (0.7), C (0.6)
    t1 = truth_mc((10.0, 10.0, 0.3), (30.0, 30.0, 0.3))
    t2 = truth_mc((50.0, 50.0, 0.3))
    d1 = dets((10.0, 10.0, 0.9), (20.0, 20.0, 0.8), (30.0, 30.0, 0.4), (40.0, 40.0, 0.3))
    d2 = dets((60.0, 60.0, 0.7), (50.0, 50.0, 0.6))
    f = froc([d1, d2], [{"calcifications": t1, "spacing_mm": [0.1, 0.1]}, t2])
    assert list(f["threshold"]) == [np.inf, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3]
    assert list(f["tp"]) == [0, 1, 1, 1, 2, 3, 3]
    assert list(f["fp"]) == [0, 0, 1, 2, 2, 2, 3]
    np.testing.assert_allclose(f["sensitivity"], np.array([0, 1, 1, 1, 2, 3, 3]) / 3)
    np.testing.assert_allclose(f["fp_per_image"], np.array([0, 0, 1, 2, 2, 2, 3]) / 2)
    assert (np.diff(f["sensitivity"]) >= 0).all() and (np.diff(f["fp_per_image"]) >= 0).all()
    assert sensitivity_at(f, 0.0) == pytest.approx(1 / 3)
    assert sensitivity_at(f, 0.5) == pytest.approx(1 / 3)
    assert sensitivity_at(f, 1.0) == pytest.approx(3 / 3)
    assert sensitivity_at(f, 1.49) == pytest.approx(1.0)
    s = froc_summary(f, rates=(0.5, 1.0))
    assert list(s["sensitivity"]) == pytest.approx([1 / 3, 1.0])
    assert list(s["threshold"]) == [0.9, 0.4]
    # explicit thresholds
    g = froc([d1, d2], [t1, t2], thresholds=[0.5, 0.85])
    assert list(g["threshold"]) == [0.85, 0.5]
    assert list(g["tp"]) == [1, 2] and list(g["fp"]) == [0, 2]


def test_froc_threshold_equals_rematching_subsets():
    """Thresholding one greedy matching equals re-matching each subset."""
    rng = np.random.default_rng(3)
    truths, detl = [], []
    for _ in range(4):
        t = truth_mc(*[(rng.uniform(0, 20), rng.uniform(0, 20), rng.uniform(0.1, 0.6)) for _ in range(12)])
        d = dets(*[(p["y_mm"] + rng.normal(0, 0.3), p["x_mm"] + rng.normal(0, 0.3), rng.random())
                   for p in t for _ in range(2)],
                 *[(rng.uniform(0, 20), rng.uniform(0, 20), rng.random()) for _ in range(10)])
        truths.append(t)
        detl.append(d)
    f = froc(detl, truths)
    for thr in [0.2, 0.5, 0.8]:
        sub = [d[d["score"] >= thr] for d in detl]
        ms = [match_calcifications(d, t) for d, t in zip(sub, truths)]
        row = f[f["threshold"] >= thr].iloc[-1]
        assert row["tp"] == sum(m["tp"] for m in ms)
        assert row["fp"] == sum(m["fp"] for m in ms)


def _truth_with_cluster():
    # one cluster of 4 MCs around (50, 50), radius 2 mm (members at distance 2)
    calcs = truth_mc((48.0, 50.0, 0.3, 0), (52.0, 50.0, 0.3, 0), (50.0, 48.0, 0.3, 0),
                     (50.0, 52.0, 0.3, 0), (10.0, 10.0, 0.3))
    clusters = [{"cluster_id": 0, "y_mm": 50.0, "x_mm": 50.0, "n_calcifications": 4,
                 "max_extent_mm": 4.0}]
    return {"calcifications": calcs, "clusters": clusters, "spacing_mm": [0.1, 0.1]}


def clus(*rows):
    return pd.DataFrame(rows, columns=["y_mm", "x_mm", "score"])


@pytest.mark.parametrize("dist, hit", [(0.0, True), (4.4, True), (4.6, False)])
def test_cluster_match_radius_plus_margin(dist, hit):
    # radius 2 mm + margin 2.5 mm = 4.5 mm
    m = match_clusters(clus((50.0 + dist, 50.0, 0.7)), _truth_with_cluster())
    assert (m["tp"], m["fp"], m["fn"]) == ((1, 0, 0) if hit else (0, 1, 1))


def test_cluster_margin_option_and_extent_fallback():
    t = _truth_with_cluster()
    assert match_clusters(clus((55.0, 50.0, 0.7)), t, margin_mm=3.5)["tp"] == 1
    # without member MCs the radius is max_extent_mm / 2 = 2 mm
    only_clusters = pd.DataFrame(t["clusters"])
    assert match_clusters(clus((54.4, 50.0, 0.7)), only_clusters)["tp"] == 1
    assert match_clusters(clus((54.6, 50.0, 0.7)), only_clusters)["tp"] == 0


def test_cluster_duplicates_and_froc():
    t = _truth_with_cluster()
    t_neg = {"calcifications": [], "clusters": [], "spacing_mm": [0.1, 0.1]}
    d_pos = clus((50.0, 50.5, 0.9), (50.0, 49.0, 0.5), (20.0, 80.0, 0.6))
    d_neg = clus((30.0, 30.0, 0.95))
    m = match_clusters(d_pos, t)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 0)  # the duplicate is a false cluster
    f = cluster_froc([d_pos, d_neg], [t, t_neg])
    assert list(f["threshold"]) == [np.inf, 0.95, 0.9, 0.6, 0.5]
    assert list(f["tp"]) == [0, 0, 1, 1, 1]
    assert list(f["fp"]) == [0, 1, 1, 2, 3]
    np.testing.assert_allclose(f["fp_per_image"], [0, 0.5, 0.5, 1.0, 1.5])
    assert sensitivity_at(f, 0.25) == 0.0
    assert sensitivity_at(f, 0.5) == 1.0


def test_cluster_score_falls_back_to_size():
    t = _truth_with_cluster()
    d = pd.DataFrame({"y_mm": [50.0, 80.0], "x_mm": [50.0, 80.0], "n_calcifications": [6, 3]})
    f = cluster_froc([d], [t])
    assert list(f["threshold"]) == [np.inf, 6, 3]
    assert list(f["tp"]) == [0, 1, 1]


def test_plot_froc_writes_png(tmp_path):
    t = truth_mc((10.0, 10.0, 0.3))
    f = froc([dets((10.0, 10.0, 0.9), (30.0, 30.0, 0.5))], [t])
    c = cluster_froc([clus((50.0, 50.0, 0.9))], [_truth_with_cluster()])
    out = tmp_path / "froc.png"
    plot_froc(f, c, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    plot_froc(f, None, tmp_path / "only.png")
    assert (tmp_path / "only.png").stat().st_size > 3000


def _cli_folders(tmp_path):
    """det/ (empty), truth/ with a.truth.json and b.truth.json (a cluster of
    4 and one single), eval/ (not made)."""
    import json

    det_dir, truth_dir, out = tmp_path / "det", tmp_path / "truth", tmp_path / "eval"
    det_dir.mkdir()
    truth_dir.mkdir()
    for stem in ("a", "b"):
        (truth_dir / f"{stem}.truth.json").write_text(json.dumps(_truth_with_cluster()))
    return det_dir, truth_dir, out


def test_cli_evaluate(tmp_path, capsys):
    from napari_calc.cli import main

    det_dir, truth_dir, out = _cli_folders(tmp_path)
    # a: finds 3 of the 4 cluster MCs + 1 FP; cluster found
    da = dets((48.0, 50.0, 0.9), (52.0, 50.0, 0.8), (50.0, 48.0, 0.7), (70.0, 70.0, 0.6))
    da["cluster_id"] = [0, 0, 0, -1]
    da.to_csv(det_dir / "a.calcifications.csv", index=False)
    clus((50.0, 49.5, 0.9)).to_csv(det_dir / "a.clusters.csv", index=False)
    # b: one rejected TP, one FP
    db = dets((10.0, 10.0, 0.95), (5.0, 5.0, 0.2))
    db.loc[0, "status"] = "rejected"
    db.to_csv(det_dir / "b.calcifications.csv", index=False)
    rc = main(["evaluate", str(det_dir), str(truth_dir), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2 images, 10 truth calcifications, 2 truth clusters" in captured.out
    assert (out / "froc.png").stat().st_size > 3000
    table = pd.read_csv(out / "froc.csv")
    calc = table[table["level"] == "calcification"]
    last = calc.iloc[-1]
    assert (last["tp"], last["fp"]) == (3, 2)
    clu = table[table["level"] == "cluster"]
    assert clu.iloc[-1]["tp"] == 1

    # single pair of files works too
    rc = main(["evaluate", str(det_dir / "a.calcifications.csv"), str(truth_dir / "a.truth.json"),
               "--out", str(tmp_path / "one")])
    assert rc == 0
    assert "1 image, 5 truth calcifications" in capsys.readouterr().out  # not "1 images"

    # errors: one line, no traceback
    rc = main(["evaluate", str(tmp_path / "missing"), str(truth_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "missing: no such file or folder" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.calcifications.csv").write_text("foo,bar\n1,2\n")
    rc = main(["evaluate", str(bad), str(truth_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and "missing column(s) y_mm, x_mm" in err and "Traceback" not in err
    # a folder without detection tables, and a file against a folder: one line each, no table
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["evaluate", str(empty), str(truth_dir), "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc != 0 and err.splitlines() == [f"napari-calc: {empty}: no *.calcifications.csv files "
                                            "(the tables of 'napari-calc detect')"] and not o
    rc = main(["evaluate", str(det_dir / "a.calcifications.csv"), str(truth_dir), "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc != 0 and len(err.splitlines()) == 1 and "a folder of detections with a folder" in err

    # an image given as detections, a bad single pair, an --out that is a file, bad margins:
    # one line each, nothing computed
    img = tmp_path / "a.tif"
    img.write_bytes(b"II*\x00" + bytes(64))
    rc = main(["evaluate", str(img), str(truth_dir / "a.truth.json"), "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc != 0 and not o and err.splitlines() == [
        f"napari-calc: {img}: not a detections table; give the *.calcifications.csv that "
        "'napari-calc detect' wrote, or a folder of them"]
    rc = main(["evaluate", str(bad / "a.calcifications.csv"), str(truth_dir / "a.truth.json"),
               "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc != 0 and not o and len(err.splitlines()) == 1 and "missing column(s)" in err
    rc = main(["evaluate", str(det_dir / "a.calcifications.csv"), str(det_dir / "a.clusters.csv"),
               "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc != 0 and not o and len(err.splitlines()) == 1 and "a.clusters.csv" in err
    a_file = tmp_path / "eval.txt"
    a_file.write_text("keep me")
    rc = main(["evaluate", str(det_dir), str(truth_dir), "--out", str(a_file)])
    o, err = capsys.readouterr()
    assert rc != 0 and not o and err.splitlines() == [
        f"napari-calc: {a_file}: --out names a file; give a folder for froc.csv and froc.png"]
    assert a_file.read_text() == "keep me"
    rc = main(["evaluate", str(det_dir), str(truth_dir), "--out", str(a_file / "sub")])
    o, err = capsys.readouterr()  # it said "Not a directory" after the whole evaluation
    assert rc != 0 and not o and err.splitlines() == [
        f"napari-calc: {a_file / 'sub'}: cannot make this --out folder: {a_file} is a file, not a folder"]
    assert a_file.read_text() == "keep me"
    for opt, val in (("--cluster-margin-mm", "-5"), ("--match-mm", "inf"), ("--match-mm", "0")):
        rc = main(["evaluate", str(det_dir), str(truth_dir), "--out", str(out), opt, val])
        o, err = capsys.readouterr()
        assert rc != 0 and not o and len(err.splitlines()) == 1 and opt in err
        # it began "napari-calc: <detections folder>: --match-mm must be ..."
        assert err.startswith(f"napari-calc: {opt} {val}: must be ") and str(det_dir) not in err, err


def test_cli_evaluate_reads_spreadsheet_tables_by_the_export_rules(tmp_path, capsys):
    """Text in y_mm ended in a traceback and no result for the whole folder;
    a decimal comma made every score NaN (sensitivity 0, exit 0); a typo'd
    status counted; a cluster table was taken for detections; a reviewed
    table as truth got "not valid JSON"."""
    from napari_calc.cli import main

    det_dir, truth_dir, out = _cli_folders(tmp_path)
    good = dets((48.0, 50.0, 0.9), (52.0, 50.0, 0.8))
    good.to_csv(det_dir / "b.calcifications.csv", index=False)
    clus((50.0, 49.5, 0.9)).to_csv(det_dir / "b.clusters.csv", index=False)
    text = good.astype(object)
    text.loc[1, "y_mm"] = "abc"
    text.to_csv(det_dir / "a.calcifications.csv", index=False)
    rc = main(["evaluate", str(det_dir), str(truth_dir), "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in err
    assert err.splitlines() == [f"napari-calc: {det_dir / 'a.calcifications.csv'}: column y_mm is not numeric: "
                                "'abc' in data row 2"]
    assert "1 image, " in o and (out / "froc.csv").exists()  # b still evaluated

    one = tmp_path / "one"
    one.mkdir()
    raw = good.to_csv(index=False).splitlines()
    head, rows = raw[0], raw[1:]
    i = head.split(",").index("score")
    comma = [",".join(f'"{v.replace(".", ",")}"' if k == i else v for k, v in enumerate(r.split(",")))
             for r in rows]
    (one / "a.calcifications.csv").write_text("\n".join([head] + comma) + "\n")
    rc = main(["evaluate", str(one / "a.calcifications.csv"), str(truth_dir / "a.truth.json"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "column score is not numeric: '0,9' in data row 1 (a decimal comma? use a point)" in err

    typo = good.copy()
    typo["status"] = ["Accepted ", "maybe"]
    typo.to_csv(one / "a.calcifications.csv", index=False)
    rc = main(["evaluate", str(one / "a.calcifications.csv"), str(truth_dir / "a.truth.json"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "status 'maybe' in data row 2 is not one of candidate, accepted, rejected, added" in err

    clus((50.0, 49.5, 0.9)).to_csv(one / "a.clusters.csv", index=False)
    rc = main(["evaluate", str(one / "a.clusters.csv"), str(truth_dir / "a.truth.json"), "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc == 2 and not o and "a cluster table, not the calcifications" in err
    rc = main(["evaluate", str(det_dir / "b.calcifications.csv"), str(det_dir / "b.calcifications.csv"),
               "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc == 2 and not o and "not a truth file: truth is a *.truth.json" in err


def test_cli_evaluate_reads_semicolon_decimal_comma_tables(tmp_path, capsys):
    """A table a spreadsheet saved with semicolons and decimal commas (as
    where the comma is the decimal separator; BOM and CRLF included) was
    "missing column(s) y_mm, x_mm": it now evaluates as the original."""
    from napari_calc.cli import main

    det_dir, truth_dir, out = _cli_folders(tmp_path)
    good = dets((48.0, 50.0, 0.9), (52.25, 50.0, 0.8), (70.5, 70.0, 0.6))
    good["cluster_id"] = [0, 0, -1]
    good.to_csv(det_dir / "a.calcifications.csv", index=False)
    clus((50.0, 49.5, 0.9)).to_csv(det_dir / "a.clusters.csv", index=False)
    args = [str(det_dir / "a.calcifications.csv"), str(truth_dir / "a.truth.json")]
    assert main(["evaluate", *args, "--out", str(out / "plain")]) == 0
    plain = capsys.readouterr().out

    excel = tmp_path / "excel"
    excel.mkdir()
    good.to_csv(excel / "a.calcifications.csv", index=False, sep=";", decimal=",", encoding="utf-8-sig",
                lineterminator="\r\n")
    clus((50.0, 49.5, 0.9)).to_csv(excel / "a.clusters.csv", index=False, sep=";", decimal=",",
                                   encoding="utf-8-sig", lineterminator="\r\n")
    assert "0,9" in (excel / "a.calcifications.csv").read_text(encoding="utf-8-sig")
    args = [str(excel / "a.calcifications.csv"), str(truth_dir / "a.truth.json")]
    rc = main(["evaluate", *args, "--out", str(out / "excel")])
    o, err = capsys.readouterr()
    assert rc == 0, err
    assert o.replace(str(out / "excel"), "OUT") == plain.replace(str(out / "plain"), "OUT")
    assert (out / "excel" / "froc.csv").read_bytes() == (out / "plain" / "froc.csv").read_bytes()

    (excel / "a.calcifications.csv").write_text("")
    rc = main(["evaluate", *args, "--out", str(out / "excel")])
    assert rc == 1
    assert capsys.readouterr().err.splitlines() == [f"napari-calc: {excel / 'a.calcifications.csv'}: file is empty"]


def test_cli_evaluate_says_what_it_guessed(tmp_path, capsys):
    """A pair of files of two different images, a missing cluster table and
    a blank score all gave figures without a word."""
    from napari_calc.cli import main

    det_dir, truth_dir, out = _cli_folders(tmp_path)
    da = dets((48.0, 50.0, 0.9), (52.0, 50.0, 0.8))
    da.to_csv(det_dir / "a.calcifications.csv", index=False)  # no a.clusters.csv
    rc = main(["evaluate", str(det_dir / "a.calcifications.csv"), str(truth_dir / "b.truth.json"),
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0
    assert f"{det_dir / 'a.calcifications.csv'}: paired with the truth of another image name " \
           f"(b.truth.json)" in err
    assert f"{det_dir / 'a.clusters.csv'}: not found beside the calcification table" in err
    da.loc[1, "score"] = np.nan
    da.to_csv(det_dir / "a.calcifications.csv", index=False)
    rc = main(["evaluate", str(det_dir / "a.calcifications.csv"), str(truth_dir / "a.truth.json"),
               "--out", str(tmp_path / "two")])
    err = capsys.readouterr().err
    assert rc == 1 and "score" in err and "a.calcifications.csv" in err
    assert not (tmp_path / "two" / "froc.csv").exists()
