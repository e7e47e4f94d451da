"""napari writers and the export reader, called directly (no viewer)."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from napari_calc.core.columns import calc_columns, cluster_columns
from napari_calc.core.export import read_detections, write_outputs
from napari_calc.plugin.export_reader import get_detections_reader
from napari_calc.plugin.layers import points_layer_kwargs, shapes_layer_kwargs
from napari_calc.plugin.writers import (
    detections_from_layer_data,
    write_calcifications_cad_sr,
    write_calcifications_csv,
    write_calcifications_json,
    write_calcifications_markups,
    write_calcifications_sr,
    write_clusters_csv,
    write_detections,
)

from _export_data import assert_same_detections, make_detections


def _napari_plugins():
    """napari's plugins, discovered once per process (a second discovery
    raises: the commands are registered already)."""
    import npe2
    from napari.plugins import _initialize_plugins

    if "napari-calc" not in {m.name for m in npe2.PluginManager.instance().iter_manifests()}:
        _initialize_plugins()


def _layer_state(det, name="img"):
    """(data, attributes) as napari hands them to a writer."""
    kw = points_layer_kwargs(det, name=f"{name} calcifications", source_layer=name)
    data = kw.pop("data")
    return data, kw


@pytest.mark.parametrize("ndim", [2, 3])
def test_points_writer_csv_round_trip(tmp_path, ndim):
    det = make_detections(ndim, extras=True)
    data, attrs = _layer_state(det)
    out = write_calcifications_csv(str(tmp_path / "img.calcifications.csv"), [(data, attrs, "points")])
    assert [p.split("/")[-1] for p in out] == ["img.calcifications.csv", "img.clusters.csv"]
    back = read_detections(out[0])
    # positions are taken from the layer data; clusters recomputed from cluster_id
    a, b = det.calcifications, back.calcifications
    for c in calc_columns(ndim) + ["morphology"]:
        if a[c].dtype.kind in "fiu":
            np.testing.assert_allclose(b[c].to_numpy(float), a[c].to_numpy(float), atol=1e-9, err_msg=c)
        else:
            assert [str(x) for x in b[c].fillna("")] == [str(x) for x in a[c]], c
    assert back.clusters.n_calcifications.tolist() == [4, 2]
    np.testing.assert_allclose(back.clusters.y_mm, det.clusters.y_mm, atol=1e-9)


def test_moved_and_added_points(tmp_path):
    det = make_detections(2)
    data, attrs = _layer_state(det)
    data = np.vstack([data, [[10.0, 20.0]]])
    data[0] += [5.0, -3.0]
    feats = attrs["features"]
    attrs["features"] = pd.concat([feats, pd.DataFrame([{c: np.nan for c in feats.columns}])],
                                  ignore_index=True)
    new = detections_from_layer_data(data, attrs)
    c = new.calcifications
    sp = det.spacing_mm
    # a moved point is at the pixel it was dropped on (indices, as the contract has them)
    assert c.row.iloc[0] == np.rint(det.calcifications.row.iloc[0] + 5)
    assert c.col.iloc[0] == np.rint(det.calcifications.col.iloc[0] - 3)
    assert c.y_mm.iloc[0] == pytest.approx(c.row.iloc[0] * sp[0])
    assert c.x_mm.iloc[0] == pytest.approx(c.col.iloc[0] * sp[1])
    # unmoved points keep their exact values
    assert c.y_mm.iloc[1] == det.calcifications.y_mm.iloc[1]
    last = c.iloc[-1]
    assert last.calc_id == det.calcifications.calc_id.max() + 1
    assert last.status == "added" and last.cluster_id == -1
    assert last.y_mm == pytest.approx(10 * sp[0]) and last.x_mm == pytest.approx(20 * sp[1])
    assert c.calc_id.is_unique


@pytest.mark.parametrize("writer,suffix", [
    (write_calcifications_json, ".detections.json"),
    (write_calcifications_sr, ".sr.dcm"),
])
def test_points_writers_exact_formats(tmp_path, writer, suffix):
    det = make_detections(2)
    data, attrs = _layer_state(det)
    out = writer(str(tmp_path / "img"), [(data, attrs, "points")])  # suffix appended
    assert out == [str(tmp_path / f"img{suffix}")]
    back = read_detections(out[0])
    np.testing.assert_allclose(back.calcifications.y_mm, det.calcifications.y_mm, atol=1e-9)
    assert back.metadata["sop_instance_uid"] == det.metadata["sop_instance_uid"]
    assert back.image_shape == det.image_shape


def test_gui_csv_has_integer_pixel_indices(tmp_path):
    """The CSV of a layer from a detection has row/col as integers, as the
    command line writes them (it wrote "155.0")."""
    from napari_calc.core.detect import detect
    from napari_calc.core.phantom import make_phantom

    ph = make_phantom(seed=2, size_mm=(40, 30))
    det = detect(ph.image)
    data, attrs = _layer_state(det)
    data = np.vstack([data, [[10.4, 20.6]]])  # and a point added in napari, between pixels
    attrs["features"] = pd.concat([pd.DataFrame(attrs["features"]), pd.DataFrame([{}])], ignore_index=True)
    out = write_calcifications_csv(str(tmp_path / "gui"), [(data, attrs, "points")])
    lines = open(out[0]).read().splitlines()
    cli = write_outputs(det, tmp_path, "cli")["csv"].read_text().splitlines()
    assert lines[1].split(",")[1:3] == cli[1].split(",")[1:3] and "." not in "".join(lines[1].split(",")[1:3])
    assert lines[-1].split(",")[1:3] == ["10", "21"]


@pytest.mark.parametrize("writer,given,written", [
    (write_calcifications_csv, "a.csv", ["a.calcifications.csv", "a.clusters.csv"]),
    (write_calcifications_sr, "j.dcm", ["j.sr.dcm"]),
    (write_calcifications_json, "k.mrk.json", ["k.detections.json"]),
    (write_calcifications_cad_sr, "m.sr.dcm", ["m.cad-sr.dcm"]),
    (write_calcifications_csv, "n.calcifications.csv", ["n.calcifications.csv", "n.clusters.csv"]),
])
def test_plain_names_from_the_save_dialog_get_the_format_suffix(tmp_path, writer, given, written):
    """Saved as 'a.csv' (the dialog's generic suffix), the table did not
    reopen: the reader and evaluate know exports by their full suffix."""
    det = make_detections(2)
    data, attrs = _layer_state(det)
    out = writer(str(tmp_path / given), [(data, attrs, "points")])
    assert sorted(out) == sorted(str(tmp_path / w) for w in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)
    assert callable(get_detections_reader(out[0]))
    np.testing.assert_allclose(read_detections(out[0]).calcifications.y_mm, det.calcifications.y_mm,
                               atol=1e-3)


def test_markups_and_cad_sr_writers(tmp_path):
    det = make_detections(2)
    data, attrs = _layer_state(det)
    m = write_calcifications_markups(str(tmp_path / "img.mrk.json"), [(data, attrs, "points")])
    doc = json.loads(open(m[0]).read())
    assert len(doc["markups"][0]["controlPoints"]) == len(det.calcifications)
    c = write_calcifications_cad_sr(str(tmp_path / "img.cad-sr.dcm"), [(data, attrs, "points")])
    assert read_detections(c[0]).calcifications.calc_id.tolist() == det.calcifications.calc_id.tolist()


def test_multi_layer_writer_uses_cluster_features(tmp_path):
    det = make_detections(2)
    data, attrs = _layer_state(det)
    sk = shapes_layer_kwargs(det, name="img clusters", source_layer="img")
    sdata = sk.pop("data")
    out = write_detections(str(tmp_path / "img.detections.json"),
                           [(data, attrs, "points"), (sdata, sk, "shapes")])
    back = read_detections(out[0])
    # cluster features (incl. max_extent/area/score) come from the Shapes layer
    for col in cluster_columns(2):
        np.testing.assert_allclose(back.clusters[col].to_numpy(float),
                                   det.clusters[col].to_numpy(float), atol=1e-12, err_msg=col)
    with pytest.raises(Exception, match="Points"):
        write_detections(str(tmp_path / "x.csv"), [(sdata, sk, "shapes")])


def test_clusters_writer(tmp_path):
    det = make_detections(2)
    sk = shapes_layer_kwargs(det, name="img clusters", source_layer="img")
    sdata = sk.pop("data")
    out = write_clusters_csv(str(tmp_path / "img.clusters.csv"), sdata, sk)
    header = open(out[0]).readline().strip().split(",")
    assert header == cluster_columns(2)  # the display label is not exported
    t = pd.read_csv(out[0])
    np.testing.assert_allclose(t.x_mm, det.clusters.x_mm, atol=1e-12)
    # saved under the calcification table's name, or a bare .csv: it replaced the
    # table of a review, or wrote a file that does not reopen
    calc = tmp_path / "img.calcifications.csv"
    calc.write_text("the reviewed table\n")
    for given in ("img.calcifications.csv", "img.csv", "img"):
        assert write_clusters_csv(str(tmp_path / given), sdata, sk) == [str(tmp_path / "img.clusters.csv")]
    assert calc.read_text() == "the reviewed table\n"
    assert not (tmp_path / "img.csv").exists()


@pytest.mark.parametrize("fmt", ["csv", "json", "sr.dcm", "cad-sr.dcm"])
def test_reader_reopens_exports(tmp_path, fmt):
    det = make_detections(2, extras=True)
    paths = write_outputs(det, tmp_path, "img", formats=[fmt])
    reader = get_detections_reader(str(paths[fmt]))
    assert callable(reader)
    layers = reader(str(paths[fmt]))
    kinds = [ld[2] for ld in layers]
    assert sorted(kinds) == ["points", "shapes"]
    pdata, pk, _ = next(ld for ld in layers if ld[2] == "points")
    sdata, sk, _ = next(ld for ld in layers if ld[2] == "shapes")
    assert pk["name"] == "img calcifications" and sk["name"] == "img clusters"
    assert tuple(pk["scale"]) == det.spacing_mm
    assert list(pk["features"].columns[: len(calc_columns(2))]) == calc_columns(2)
    tol = 1e-3 if fmt == "cad-sr.dcm" else 1e-9
    np.testing.assert_allclose(pdata, det.calcifications[["row", "col"]].to_numpy(), atol=tol)
    assert len(sdata) == len(det.clusters)
    assert pk["metadata"]["napari_calc"]["kind"] == "calcifications"
    if fmt != "cad-sr.dcm":
        assert "morphology" in pk["features"].columns
    # writing the reopened layers gives the same tables back (review can continue)
    out = write_detections(str(tmp_path / "again.calcifications.csv"),
                           [(pdata, pk, "points"), (sdata, sk, "shapes")])
    again = read_detections(out[0])
    if fmt != "cad-sr.dcm":
        assert_same_detections(det, again, 2, atol=1e-9, check_extras=True)


def test_reader_reopens_an_export_without_findings(tmp_path):
    """An image without findings exports empty tables; they reopen as empty
    layers (napari refused the empty colour array that was passed)."""
    from napari.layers import Points, Shapes

    from napari_calc.core.detect import detect

    det = detect(np.full((300, 300), 1000, np.uint16), 0.1)
    assert len(det.calcifications) == 0
    paths = write_outputs(det, tmp_path, "img", formats=["csv", "json"])
    for fmt in ("csv", "json"):
        layers = get_detections_reader(str(paths[fmt]))(str(paths[fmt]))
        pdata, pk, _ = next(ld for ld in layers if ld[2] == "points")
        sdata, sk, _ = next(ld for ld in layers if ld[2] == "shapes")
        assert len(Points(pdata, **pk).data) == 0 and len(Shapes(sdata, **sk).data) == 0


def test_reader_declines_foreign_files(tmp_path):
    p = tmp_path / "other.json"
    p.write_text('{"a": 1}')
    assert get_detections_reader(str(p)) is None
    q = tmp_path / "img.mrk.json"
    q.write_text("{}")
    assert get_detections_reader(str(q)) is None
    assert get_detections_reader(str(tmp_path / "missing.calcifications.csv")) is None
    r = tmp_path / "scan.tif"
    r.write_bytes(b"II*\x00")
    assert get_detections_reader(str(r)) is None


def test_reader_pair_loads_once(tmp_path):
    det = make_detections(2)
    paths = write_outputs(det, tmp_path, "img")
    reader = get_detections_reader([str(paths["csv"]), str(paths["clusters.csv"])])
    assert len(reader(None)) == 2


def test_real_napari_layer_state(tmp_path):
    napari_layers = pytest.importorskip("napari.layers")
    det = make_detections(3)
    kw = points_layer_kwargs(det, name="img calcifications", source_layer="img")
    layer = napari_layers.Points(**kw)
    data, attrs, ltype = layer.as_layer_data_tuple()
    assert ltype == "points"
    out = write_calcifications_csv(str(tmp_path / "img.calcifications.csv"), [(data, attrs, "points")])
    back = read_detections(out[0])
    np.testing.assert_allclose(back.calcifications[["slice", "row", "col", "z_mm", "y_mm", "x_mm"]],
                               det.calcifications[["slice", "row", "col", "z_mm", "y_mm", "x_mm"]],
                               atol=1e-9)
    assert back.calcifications.status.tolist() == det.calcifications.status.tolist()


def test_points_added_with_napari_tools_get_the_panel_defaults(tmp_path):
    """They were saved with empty score and diameter: evaluate and the score
    threshold passed over the annotator's own findings."""
    from napari_calc.core.review import DEFAULT_ADDED_DIAMETER_MM

    det = make_detections(2)
    kw = points_layer_kwargs(det, name="img calcifications")
    data = np.vstack([kw.pop("data"), [[300.0, 400.0], [310.0, 420.0]]])  # two drawn in napari
    out = write_calcifications_csv(str(tmp_path / "img.calcifications.csv"), [(data, kw, "points")])
    t = pd.read_csv(out[0])
    new = t.tail(2)
    assert new.status.tolist() == ["added", "added"]
    assert new.score.tolist() == [1.0, 1.0]
    assert new.diameter_mm.tolist() == [DEFAULT_ADDED_DIAMETER_MM] * 2
    old = t.head(len(det.calcifications))
    np.testing.assert_allclose(old.score, det.calcifications.score)  # the others untouched


def test_save_selected_layers_offers_every_type_with_the_clusters_layer_selected_too(tmp_path):
    """The README says: select the calcifications layer and its clusters
    layer, then pick a type. With both selected, napari offered only
    'detections (format from the file name)'; the Shapes layer's cluster
    table must be what is saved."""
    napari_layers = pytest.importorskip("napari.layers")
    from napari.plugins.io import save_layers

    det = make_detections(2)
    pts = napari_layers.Points(**points_layer_kwargs(det, name="img calcifications",
                                                     source_layer="img"))
    shp = napari_layers.Shapes(**shapes_layer_kwargs(det, name="img clusters", source_layer="img"))
    feats = shp.features.copy()
    feats.loc[0, "score"] = 0.123  # edited on the clusters layer: saved as edited
    shp.features = feats
    from napari.plugins._npe2 import file_extensions_string_for_layers

    _napari_plugins()
    wanted = {"calcifications CSV": ["img.calcifications.csv", "img.clusters.csv"],
              "detections JSON": ["img.detections.json"],
              "3D Slicer markups": ["img.mrk.json"],
              "DICOM SR (TID 1500)": ["img.sr.dcm"],
              "Mammography CAD SR": ["img.cad-sr.dcm"]}
    for layers in ([pts], [pts, shp]):  # what the Save Selected Layers dialog lists
        filters, writers = file_extensions_string_for_layers(layers)
        offered = {w.display_name for w in writers if w.command.startswith("napari-calc.")}
        assert set(wanted) <= offered, (len(layers), offered)
        assert "napari-calc 3D Slicer markups (*.mrk.json)" in filters.split(";;")
    for w in writers:
        if w.display_name not in wanted:
            continue
        d = tmp_path / w.display_name.replace(" ", "_").replace("(", "").replace(")", "")
        d.mkdir()
        out = save_layers(str(d / "img.csv"), [pts, shp], _writer=w)
        assert sorted(os.path.basename(p) for p in out) == sorted(wanted[w.display_name])
        if w.display_name in ("calcifications CSV", "detections JSON", "DICOM SR (TID 1500)"):
            back = read_detections(out[0])
            assert back.clusters.score.tolist()[0] == pytest.approx(0.123)
            assert back.clusters.cluster_id.tolist() == det.clusters.cluster_id.tolist()


def test_a_cluster_table_on_its_own_reopens_as_its_clusters(tmp_path):
    """Saved with 'clusters CSV' (the clusters layer alone), it reopened as
    pin-point outlines and an empty calcifications layer that the Review
    panel took for the image's review."""
    det = make_detections(2)
    sk = shapes_layer_kwargs(det, name="f clusters", source_layer="f")
    sdata = sk.pop("data")
    out = write_clusters_csv(str(tmp_path / "f.csv"), sdata, sk)
    assert [os.path.basename(p) for p in out] == ["f.clusters.csv"]
    layers = get_detections_reader(out[0])(out[0])
    assert [t for _, _, t in layers] == ["shapes"]
    data, kw, _ = layers[0]
    assert kw["name"] == "f clusters" and len(data) == len(det.clusters)
    assert kw["features"].cluster_id.tolist() == det.clusters.cluster_id.tolist()
    sp = np.asarray(kw["scale"])
    for poly, cl in zip(data, det.clusters.itertuples()):
        mm = np.asarray(poly) * sp
        centre = mm.mean(axis=0)
        np.testing.assert_allclose(centre, [cl.y_mm, cl.x_mm], atol=0.01)
        diam = 2 * np.linalg.norm(mm - centre, axis=1)
        np.testing.assert_allclose(diam, max(cl.max_extent_mm, 1.2), rtol=0.01)
    # with the calcification table beside it, both layers, as before
    write_outputs(det, tmp_path / "both", "g")
    both = get_detections_reader(str(tmp_path / "both" / "g.clusters.csv"))(
        str(tmp_path / "both" / "g.clusters.csv"))
    assert sorted(t for _, _, t in both) == ["points", "shapes"]


def test_slicer_markups_dropped_on_napari_say_what_to_open(tmp_path):
    """napari said only that no reader could open a .mrk.json."""
    napari_components = pytest.importorskip("napari.components")
    _napari_plugins()
    out = write_outputs(make_detections(2), tmp_path, "m", formats="mrk.json")
    reader = get_detections_reader(str(out["mrk.json"]))
    assert callable(reader)
    with pytest.raises(Exception) as e:
        napari_components.ViewerModel().open(str(out["mrk.json"]), plugin=None)
    assert "m.mrk.json: 3D Slicer markups are written for Slicer and not read back; open " \
           "m.calcifications.csv, m.detections.json or m.sr.dcm instead" in str(e.value)
