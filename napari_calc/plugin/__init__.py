"""napari plugin layer of napari-calc (npe2 manifest: ``napari_calc/napari.yaml``).

Everything here may import napari, magicgui and qtpy; nothing in
:mod:`napari_calc.core` or :mod:`napari_calc.cli` imports this package at
module level.

- :mod:`.reader` opens mammograms (DICOM / TIFF) as image layers with their
  physical scale;
- :mod:`.sample_data` offers the synthetic mammogram;
- :mod:`.layers` converts :class:`~napari_calc.core.detections.Detections`
  to and from Points / Shapes layers;
- :mod:`.detect_widget` and :mod:`.review_widget` are the two dock widgets;
- :mod:`.viewer` opens a viewer with both docked (``napari-calc view``).
"""
