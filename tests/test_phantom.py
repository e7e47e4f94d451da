"""Tests of the synthetic mammogram generator and its ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_calc.core.errors import NapariCalcError
from napari_calc.core.phantom import load_truth, make_phantom, rle_to_mask, write_phantom

SMALL = dict(size_mm=(50.0, 40.0), n_clusters=1, n_singles=2)


def _peak_diff(full, omitted, row, col, radius_px):
    diff = full.astype(np.float64) - omitted.astype(np.float64)
    r0, c0 = int(round(row)), int(round(col))
    win = diff[max(0, r0 - radius_px): r0 + radius_px + 1, max(0, c0 - radius_px): c0 + radius_px + 1]
    return diff, float(win.max())


@pytest.mark.parametrize("for_processing, mc_shapes", [(False, "round"), (True, "round"),
                                                       (False, "linear")])
def test_truth_contrast_is_the_built_contrast(for_processing, mc_shapes):
    """Each MC's truth contrast equals the peak of (noise-free image) minus
    (noise-free image rendered without that MC), measured independently on
    the full images."""
    kw = dict(SMALL, return_noise_free=True, for_processing=for_processing, mc_shapes=mc_shapes)
    ph = make_phantom(11, **kw)
    calcs = ph.truth["calcifications"]
    assert len(calcs) >= 5
    sign = -1.0 if for_processing else 1.0
    for c in calcs[:: max(1, len(calcs) // 4)]:
        ph2 = make_phantom(11, omit_calc_ids=[c["calc_id"]], **kw)
        assert c["calc_id"] not in [d["calc_id"] for d in ph2.truth["calcifications"]]
        diff, peak = _peak_diff(sign * ph.noise_free, sign * ph2.noise_free, c["row"], c["col"], 6)
        assert peak > 0
        assert peak == pytest.approx(c["contrast"], rel=0.01, abs=0.05)
        # all of the difference is local to the MC
        far = np.ones(diff.shape, bool)
        r0, c0 = int(round(c["row"])), int(round(c["col"]))
        far[max(0, r0 - 8): r0 + 9, max(0, c0 - 8): c0 + 9] = False
        assert np.abs(diff[far]).max() < 0.01 * c["contrast"] + 0.05


def test_equalization_keeps_small_structures():
    """Presentation equalisation flattens the thickness fall-off but leaves
    the MC contrast (and the pixel noise) as they were."""
    a = make_phantom(13, equalize=True, return_noise_free=True, **SMALL)
    b = make_phantom(13, equalize=False, return_noise_free=True, **SMALL)
    assert a.truth["params"]["equalize"] and not b.truth["params"]["equalize"]
    for p, q in zip(a.truth["calcifications"], b.truth["calcifications"]):
        assert p["contrast"] == pytest.approx(q["contrast"], rel=1e-9)
    m = a.breast_mask
    # the breast's range of values shrinks (thickness fall-off flattened)
    ra = np.ptp(np.percentile(a.noise_free[m], [5, 95]))
    rb = np.ptp(np.percentile(b.noise_free[m], [5, 95]))
    assert ra < 0.8 * rb
    na = (a.image.pixels.astype(float) - a.noise_free)[m].std()
    nb = (b.image.pixels.astype(float) - b.noise_free)[m].std()
    assert na == pytest.approx(nb, rel=0.02)


def test_truth_contrast_range_and_cnr():
    ph = make_phantom(2, **SMALL)
    for c in ph.truth["calcifications"]:
        assert c["contrast"] > 0
        assert c["contrast_log"] > 0
        assert c["contrast"] == pytest.approx(
            ph.truth["params"]["presentation_gain"] * c["contrast_log"], rel=1e-9
        )
        assert c["cnr"] == pytest.approx(c["contrast"] / c["noise_sd"])
        assert 0.09 <= c["diameter_mm"] <= 0.75


def test_contrast_grows_with_attenuation():
    lo = make_phantom(4, mc_delta_mu=(0.5, 0.5), **SMALL).truth["calcifications"]
    hi = make_phantom(4, mc_delta_mu=(1.5, 1.5), **SMALL).truth["calcifications"]
    assert len(lo) == len(hi)
    for a, b in zip(lo, hi):
        assert a["calc_id"] == b["calc_id"] and a["row"] == b["row"]
        assert b["contrast"] > 2.0 * a["contrast"]


def test_positions_in_mm_and_inside_breast():
    ph = make_phantom(3, spacing_mm=0.08, **SMALL)
    sp = ph.image.spacing_mm
    assert sp == (0.08, 0.08)
    assert ph.truth["spacing_mm"] == [0.08, 0.08]
    assert ph.truth["shape"] == list(ph.image.pixels.shape)
    for c in ph.truth["calcifications"]:
        assert c["y_mm"] == pytest.approx(c["row"] * sp[0])
        assert c["x_mm"] == pytest.approx(c["col"] * sp[1])
        assert ph.breast_mask[int(round(c["row"])), int(round(c["col"]))]
    for cl in ph.truth["clusters"]:
        members = [c for c in ph.truth["calcifications"] if c["cluster_id"] == cl["cluster_id"]]
        assert cl["n_calcifications"] == len(members) >= 5
        assert cl["y_mm"] == pytest.approx(np.mean([c["y_mm"] for c in members]))
        assert 0 < cl["max_extent_mm"] <= 10.0


def test_deterministic_for_a_seed():
    a = make_phantom(7, **SMALL)
    b = make_phantom(7, **SMALL)
    c = make_phantom(8, **SMALL)
    np.testing.assert_array_equal(a.image.pixels, b.image.pixels)
    assert a.truth == b.truth
    assert not np.array_equal(a.image.pixels, c.image.pixels)
    assert a.image.pixels.dtype == np.uint16
    assert a.image.metadata["name"] == "phantom-7"
    assert a.image.metadata["source_path"] is None
    assert a.image.metadata["modality"] == "MG"


def test_spacing_changes_pixels_not_geometry():
    a = make_phantom(5, spacing_mm=0.1, **SMALL)
    b = make_phantom(5, spacing_mm=0.2, **SMALL)
    assert a.image.pixels.shape == (500, 400)
    assert b.image.pixels.shape == (250, 200)
    ca, cb = a.truth["calcifications"], b.truth["calcifications"]
    assert len(ca) == len(cb) > 0
    for p, q in zip(ca, cb):
        assert p["y_mm"] == pytest.approx(q["y_mm"], abs=1e-9)
        assert p["x_mm"] == pytest.approx(q["x_mm"], abs=1e-9)
        assert q["row"] == pytest.approx(p["row"] / 2)
        assert p["diameter_mm"] == pytest.approx(q["diameter_mm"], rel=0.1)
    # same anatomy: the 0.1 mm image binned 2x2 resembles the 0.2 mm image
    binned = a.image.pixels.astype(float).reshape(250, 2, 200, 2).mean(axis=(1, 3))
    m = b.breast_mask
    r = np.corrcoef(binned[m], b.image.pixels.astype(float)[m])[0, 1]
    assert r > 0.95


def test_vessels_without_mcs_have_empty_truth():
    ph = make_phantom(9, mcs=False, vessels=True, **SMALL)
    assert ph.truth["calcifications"] == []
    assert ph.truth["clusters"] == []
    with_v = make_phantom(9, mcs=False, vessels=True, return_noise_free=True, **SMALL)
    no_v = make_phantom(9, mcs=False, vessels=False, return_noise_free=True, **SMALL)
    # the vessels are there and bright (dense)
    assert (with_v.noise_free - no_v.noise_free).max() > 10


def test_breast_outline_and_skin_line():
    ph = make_phantom(1, return_noise_free=True, mcs=False, **{k: v for k, v in SMALL.items() if k == "size_mm"})
    m = ph.breast_mask
    img = ph.noise_free
    assert m[:, 0].any() and not m[:, -1].any()  # chest wall at column 0 (left breast)
    assert img[m].mean() > img[~m].mean() + 500  # breast is dense (bright), air dark
    # along the middle row the skin line is a local maximum just inside the edge
    row = img[m.shape[0] // 2]
    edge = int(np.flatnonzero(m[m.shape[0] // 2])[-1])
    outer = row[edge - 25: edge + 1]  # the last 2.5 mm
    ridges = [k for k in range(1, len(outer) - 1) if outer[k - 1] <= outer[k] >= outer[k + 1]]
    assert ridges  # a ridge inside the edge, not just a fall-off
    k = ridges[-1]
    assert outer[k] > row[edge - 40: edge - 25 + k].min() + 10


def test_right_breast_is_mirrored():
    left = make_phantom(6, laterality="L", **SMALL)
    right = make_phantom(6, laterality="R", **SMALL)
    np.testing.assert_array_equal(right.image.pixels, left.image.pixels[:, ::-1])
    ncol = left.image.pixels.shape[1]
    for p, q in zip(left.truth["calcifications"], right.truth["calcifications"]):
        assert q["col"] == pytest.approx(ncol - 1 - p["col"])
        assert q["row"] == pytest.approx(p["row"])
    assert right.image.metadata["laterality"] == "R"


def test_texture_power_law_beta_3():
    from napari_calc.core.phantom import _render_texture, _texture_coefficients

    rng = np.random.default_rng(0)
    sp = 0.2
    tc = _texture_coefficients(rng, (102.4, 102.4), beta=3.0)
    tex = _render_texture(tc, (512, 512)).astype(np.float64)
    ps = np.abs(np.fft.fft2(tex)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(512, sp), np.fft.fftfreq(512, sp), indexing="ij"))
    sel = (f > 0.1) & (f < 1.5)
    slope = np.polyfit(np.log(f[sel]), np.log(ps[sel]), 1)[0]
    assert -3.3 < slope < -2.7


def test_quantum_noise_is_signal_dependent():
    ph = make_phantom(12, for_processing=True, return_noise_free=True, mcs=False, vessels=False,
                      benign=False, **{k: v for k, v in SMALL.items() if k == "size_mm"})
    pr = ph.truth["params"]
    gain, off = pr["raw_gain"], pr["raw_offset"]
    E = (ph.noise_free.astype(np.float64) - off) / gain
    res = (ph.image.pixels.astype(np.float64) - ph.noise_free) / gain
    # raw data: dense is dark
    assert ph.noise_free[ph.breast_mask].mean() < ph.noise_free[~ph.breast_mask].mean()
    e2 = pr["electronic_noise_quanta"] ** 2
    for lo, hi in [(0.1, 0.3), (0.6, 0.9)]:
        q = np.quantile(E[ph.breast_mask], [lo, hi])
        sel = ph.breast_mask & (E >= q[0]) & (E <= q[1])
        ratio = res[sel].var() / (E[sel].mean() + e2)
        assert ratio == pytest.approx(1.0, abs=0.08)


def test_stack_truth():
    ph = make_phantom(2, spacing_mm=0.2, n_slices=5, slice_mm=2.0, return_noise_free=True, **SMALL)
    px = ph.image.pixels
    assert px.ndim == 3 and px.shape[0] == 5
    assert ph.image.spacing_mm == (2.0, 0.2, 0.2)
    assert ph.breast_mask.shape == px.shape[1:]
    calcs = ph.truth["calcifications"]
    assert calcs
    for c in calcs:
        assert 0 <= c["slice"] < 5
        assert c["z_mm"] == pytest.approx(c["slice"] * 2.0)
    # an MC is sharpest (highest local contrast) in its truth slice
    c = max(calcs, key=lambda c: c["contrast"])
    ph2 = make_phantom(2, spacing_mm=0.2, n_slices=5, slice_mm=2.0, return_noise_free=True,
                       omit_calc_ids=[c["calc_id"]], **SMALL)
    peaks = [_peak_diff(ph.noise_free[k], ph2.noise_free[k], c["row"], c["col"], 6)[1] for k in range(5)]
    assert int(np.argmax(peaks)) == c["slice"]
    assert peaks[c["slice"]] == pytest.approx(c["contrast"], rel=0.01, abs=0.05)


def test_write_and_read_back(tmp_path):
    import pydicom
    import tifffile

    ph = make_phantom(3, spacing_mm=0.125, **SMALL)
    out = write_phantom(ph, tmp_path, formats=("tiff", "dicom"))
    assert set(out) == {"tiff", "dicom", "truth"}
    assert out["truth"].name == "phantom-3.truth.json"
    with tifffile.TiffFile(out["tiff"]) as tf:
        page = tf.pages[0]
        np.testing.assert_array_equal(page.asarray(), ph.image.pixels)
        xres = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        assert 10.0 / (xres[0] / xres[1]) == pytest.approx(0.125)
        assert tf.imagej_metadata["unit"] == "cm"
    ds = pydicom.dcmread(out["dicom"])
    assert [float(v) for v in ds.PixelSpacing] == [0.125, 0.125]
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.125, 0.125]
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.Modality == "MG" and ds.ImageLaterality == "L" and ds.ViewPosition == "CC"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
    assert ds.PresentationIntentType == "FOR PRESENTATION"
    np.testing.assert_array_equal(ds.pixel_array, ph.image.pixels)
    truth = load_truth(out["truth"])
    assert truth == json.loads(json.dumps(ph.truth))
    np.testing.assert_array_equal(rle_to_mask(truth["breast_mask_rle"]), ph.breast_mask)


def test_load_truth_errors(tmp_path):
    with pytest.raises(NapariCalcError, match="nope.truth.json"):
        load_truth(tmp_path / "nope.truth.json")
    bad = tmp_path / "bad.truth.json"
    bad.write_text("{not json")
    with pytest.raises(NapariCalcError, match="bad.truth.json: not valid JSON"):
        load_truth(bad)
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    with pytest.raises(NapariCalcError, match="not a phantom truth file"):
        load_truth(other)


def test_shape_argument_and_small_images():
    ph = make_phantom(1, shape=(300, 240), spacing_mm=0.1, n_clusters=1)
    assert ph.image.pixels.shape == (300, 240)
    assert ph.truth["params"]["size_mm"] == pytest.approx([30.0, 24.0])
    assert len(ph.truth["clusters"]) == 1
    ids = [c["calc_id"] for c in ph.truth["calcifications"]]
    assert len(ids) == len(set(ids))
    # 40 x 30 mm: two clusters fit once the separation is relaxed (>= 12 mm)
    ph = make_phantom(5, size_mm=(40, 30))
    assert len(ph.truth["clusters"]) == 2
    a, b = ph.truth["clusters"]
    assert np.hypot(a["y_mm"] - b["y_mm"], a["x_mm"] - b["x_mm"]) > 12.0 - 8.0  # centroids
    # too small for two distinct clusters: a clear error, not overlapping clusters
    with pytest.raises(NapariCalcError, match="too small for 2 cluster"):
        make_phantom(1, shape=(250, 200), n_clusters=2)


def _footprint_aspect(ph, c, **kw):
    """Aspect ratio (sqrt of the eigenvalue ratio of the second moments) of
    one MC's footprint: noise-free image minus the image without it."""
    ph2 = make_phantom(ph.truth["seed"], omit_calc_ids=[c["calc_id"]], **kw)
    d = ph.noise_free.astype(np.float64) - ph2.noise_free.astype(np.float64)
    d[d < 0.2 * d.max()] = 0.0
    yy, xx = np.nonzero(d)
    w = d[yy, xx]
    cov = np.cov(np.stack([yy, xx]), aweights=w)
    ev = np.linalg.eigvalsh(cov)
    return float(np.sqrt(ev[1] / ev[0]))


def test_linear_mcs_change_only_the_shapes():
    """mc_shapes="linear" gives rod-like MCs at the positions, attenuation
    and clusters of the round ones of the same seed; "mixed" makes whole
    clusters linear and keeps singles round."""
    kw = dict(size_mm=(50.0, 45.0), n_clusters=2, n_singles=2, spacing_mm=0.05, return_noise_free=True)
    rnd = make_phantom(21, **kw)
    lin = make_phantom(21, mc_shapes="linear", **kw)
    tr, tl = rnd.truth["calcifications"], lin.truth["calcifications"]
    assert len(tr) == len(tl) >= 10
    for a, b in zip(tr, tl):
        for k in ("calc_id", "y_mm", "x_mm", "delta_mu", "cluster_id"):
            assert a[k] == b[k]
        assert a["shape"] == "round" and b["shape"] == "linear"
        assert 0.1 <= b["diameter_mm"] <= 0.6
    # the footprints: rods 2.5-5 times as long as wide, round ones < 2
    for c in tl[::6]:
        assert _footprint_aspect(lin, c, mc_shapes="linear", **kw) > 1.8
    for c in tr[::6]:
        assert _footprint_aspect(rnd, c, **kw) < 1.8
    # the anatomy and noise are the same: away from the MCs the images
    # differ only through the 10 mm equalisation low-pass (by rounding)
    far = np.ones(rnd.noise_free.shape, bool)
    for c in tr:
        r, q = int(round(c["row"])), int(round(c["col"]))
        far[max(0, r - 30): r + 31, max(0, q - 30): q + 31] = False
    diff = rnd.image.pixels[far].astype(int) - lin.image.pixels[far].astype(int)
    assert np.abs(diff).max() <= 1 and np.mean(diff != 0) < 0.05
    shapes = {}
    for seed in range(30, 36):
        mixed = make_phantom(seed, mc_shapes="mixed", **dict(kw, spacing_mm=0.2, return_noise_free=False))
        for c in mixed.truth["calcifications"]:
            shapes.setdefault((seed, c["cluster_id"]), set()).add(c["shape"])
    assert all(len(v) == 1 for v in shapes.values())  # one morphology per cluster
    assert all(v == {"round"} for (s, cid), v in shapes.items() if cid < 0)  # singles round
    kinds = {next(iter(v)) for (s, cid), v in shapes.items() if cid >= 0}
    assert kinds == {"round", "linear"}


def test_invalid_parameters():
    with pytest.raises(NapariCalcError, match="mc_shapes"):
        make_phantom(0, mc_shapes="branching", **SMALL)
    with pytest.raises(NapariCalcError, match="difficulty"):
        make_phantom(0, difficulty="impossible", **SMALL)
    with pytest.raises(NapariCalcError, match="density"):
        make_phantom(0, density=2.0, **SMALL)


def test_cli_phantom(tmp_path, capsys):
    from napari_calc.cli import main

    rc = main(["phantom", str(tmp_path / "out"), "--n", "2", "--seed", "4", "--spacing", "0.2",
               "--format", "both"])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["phantom-4.dcm", "phantom-4.tif", "phantom-4.truth.json",
                     "phantom-5.dcm", "phantom-5.tif", "phantom-5.truth.json"]
    truth = load_truth(tmp_path / "out" / "phantom-4.truth.json")
    assert truth["spacing_mm"] == [0.2, 0.2] and truth["seed"] == 4

    rc = main(["phantom", str(tmp_path / "rods"), "--spacing", "0.2", "--mc-shapes", "linear"])
    assert rc == 0
    calcs = load_truth(tmp_path / "rods" / "phantom-0.truth.json")["calcifications"]
    assert calcs and {c["shape"] for c in calcs} == {"linear"}

    rc = main(["phantom", str(tmp_path / "neg"), "--no-mcs", "--spacing", "0.2"])
    assert rc == 0
    assert load_truth(tmp_path / "neg" / "phantom-0.truth.json")["calcifications"] == []

    capsys.readouterr()
    rc = main(["phantom", str(tmp_path / "x"), "--spacing", "5"])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.count("\n") == 1 and err.startswith("napari-calc: ") and "spacing" in err
    assert "Traceback" not in err


def test_cli_phantom_keeps_an_edited_truth(tmp_path, capsys):
    """A truth corrected by hand was overwritten by the next run into the folder."""
    from napari_calc.cli import main

    out = tmp_path / "out"
    args = ["phantom", str(out), "--spacing", "0.2"]
    assert main(args) == 0
    tp = out / "phantom-0.truth.json"
    capsys.readouterr()
    assert main(args) == 0  # the same phantom again: nothing to keep, nothing said
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in out.iterdir()) == ["phantom-0.tif", "phantom-0.truth.json"]

    truth = json.loads(tp.read_text())
    truth["calcifications"] = truth["calcifications"][1:]  # a false one removed by hand
    edited = json.dumps(truth, indent=2)
    tp.write_text(edited)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("napari-calc: ") and "Traceback" not in err
    assert "phantom-0.truth.json edited since it was written: kept as phantom-0.truth.json.bak" in err
    assert (out / "phantom-0.truth.json.bak").read_text() == edited
    assert load_truth(tp)["calcifications"] != truth["calcifications"]  # the new truth as made

    # other options: the earlier truth is kept too, next to the first backup
    assert main(args + ["--seed", "0", "--difficulty", "easy"]) == 0
    err = capsys.readouterr().err
    assert "made with other options or edited: kept as phantom-0.truth.json.bak.2" in err
    assert (out / "phantom-0.truth.json.bak").read_text() == edited
