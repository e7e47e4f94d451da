"""napari sample data: a synthetic mammogram with known calcifications."""

from __future__ import annotations

__all__ = ["make_sample_data", "SAMPLE_NAME"]

SAMPLE_NAME = "sample-mammogram"


def make_sample_data(seed: int = 0):
    """The built-in synthetic mammogram (generated, never downloaded).

    A 120 x 96 mm full-field mammogram at 0.1 mm spacing from
    :func:`napari_calc.core.phantom.make_phantom`, with two clusters of
    microcalcifications and a few isolated ones; the ground truth is kept in
    the layer's ``metadata["napari_calc"]["truth"]``.

    Returns
    -------
    list of LayerDataTuple
        One image layer with ``scale`` = spacing in mm.
    """
    from ..core.phantom import make_phantom
    from .reader import image_layer_data

    ph = make_phantom(seed=seed)
    img = ph.image
    img.metadata.setdefault("name", SAMPLE_NAME)
    data, kw, kind = image_layer_data(img, name=SAMPLE_NAME)
    kw["metadata"]["napari_calc"]["truth"] = ph.truth
    kw["metadata"]["napari_calc"]["image_metadata"]["name"] = SAMPLE_NAME
    return [(data, kw, kind)]
