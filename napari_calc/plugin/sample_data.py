"""napari sample data: a synthetic mammogram with known calcifications."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["make_sample_data", "SAMPLE_NAME"]

SAMPLE_NAME = "sample-mammogram"


@lru_cache(maxsize=2)
def _phantom(seed: int):
    from ..core.phantom import make_phantom

    return make_phantom(seed=seed)


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
    import copy

    from ..core.image import MammoImage
    from .reader import image_layer_data

    ph = _phantom(seed)
    img = MammoImage(pixels=ph.image.pixels.copy(), spacing_mm=ph.image.spacing_mm,
                     metadata=copy.deepcopy(ph.image.metadata))
    img.metadata.setdefault("name", SAMPLE_NAME)
    data, kw, kind = image_layer_data(img, name=SAMPLE_NAME)
    kw["metadata"]["napari_calc"]["truth"] = copy.deepcopy(ph.truth)
    kw["metadata"]["napari_calc"]["image_metadata"]["name"] = SAMPLE_NAME
    return [(data, kw, kind)]
