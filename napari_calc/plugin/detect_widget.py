"""The "Detect calcifications" dock widget.

Runs :func:`napari_calc.core.detect.detect` on the chosen image layer in a
napari ``thread_worker`` (the event loop keeps running), with a progress
bar and a Cancel button, and shows the results as
``"<image> calcifications"`` (Points) and ``"<image> clusters"`` (Shapes).
The image layer is captured when Run is pressed, so results land on it even
if the user selects another layer meanwhile; re-running updates those two
layers in place instead of adding new ones.

"Run on all images" does the same for every image layer open (the views of
an exam), one after another in one worker: each image's results are shown
as soon as it is done, exactly as a single Run shows them; an image that
fails is named in the status line and the others go on; Cancel stops the
run, keeping the images already done. An image whose results have been
reviewed is left as it is (a single Run on it re-detects and carries the
review over to the new candidates).
"""

from __future__ import annotations

import threading
from dataclasses import fields
from typing import TYPE_CHECKING

import pandas as pd
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QObject, Signal

from ..core.detect import PRESETS, DetectionParams
from ..core.errors import DetectionCancelled, MissingSpacingError, NapariCalcError, counted
from ..core.image import MammoImage
from ..core.review import carry_over, reviewed_mask
from ._elide import elide_combo
from ._scroll import PanelScroll
from .layers import detections_from_layers, find_result_layers, layer_spacing, show_detections
from .review_widget import under_review

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["DetectWidget", "CUSTOM_PRESET", "PARAM_SPECS"]

CUSTOM_PRESET = "Custom"
DEFAULT_SPACING_MM = 0.1
#: Slice spacing offered for a stack without physical scale (tomosynthesis
#: reconstructions are usually 1 mm apart).
DEFAULT_SLICE_SPACING_MM = 1.0

#: name -> (label, widget kind, min, max, step, tooltip)
PARAM_SPECS = {
    "min_diameter_mm": ("Min diameter (mm)", "float", 0.02, 5.0, 0.01,
                        "Smallest calcification diameter looked for, in mm (MCs: 0.1-1.0 mm)."),
    "max_diameter_mm": ("Max diameter (mm)", "float", 0.05, 10.0, 0.05,
                        "Largest calcification diameter looked for, in mm."),
    "threshold": ("Threshold (x noise)", "float", 0.5, 50.0, 0.1,
                  "A candidate's filter response must exceed this many local noise standard "
                  "deviations. Lower finds more (and more false) candidates."),
    "nms_radius_mm": ("Min separation (mm)", "float", 0.0, 10.0, 0.05,
                      "Two candidates are never closer than this (non-maximum suppression)."),
    "noise_tile_mm": ("Noise tile (mm)", "float", 0.5, 100.0, 0.5,
                      "Side of the square tiles in which the local noise is measured."),
    "skin_margin_mm": ("Skin margin (mm)", "float", 0.0, 50.0, 0.5,
                       "Band along the skin line excluded from detection."),
    "use_mask": ("Breast mask", "bool", None, None, None,
                 "Segment the breast automatically and detect inside it only."),
    "cluster_radius_mm": ("Cluster radius (mm)", "float", 0.5, 100.0, 0.1,
                          "Neighbourhood radius for grouping calcifications into clusters "
                          "(default: a disc of 1 cm²)."),
    "min_cluster_size": ("Min per cluster", "int", 2, 100, 1,
                         "Calcifications needed to form a cluster (BI-RADS 'grouped': 3)."),
    "cluster_min_score": ("Cluster min score", "float", 0.0, 1.0, 0.05,
                          "Only candidates with at least this score (0-1) take part in clustering."),
    "max_candidates": ("Max candidates", "int", 1, 1_000_000, 100,
                       "At most this many candidates per image (the highest scores are kept)."),
}


#: Parameters shown up front; the others sit in the "Advanced" section.
MAIN_PARAMS = ("min_diameter_mm", "max_diameter_mm", "threshold", "nms_radius_mm")


def _unwrap(obj):
    """The object behind napari's PublicOnlyProxy (plugin widgets get proxies)."""
    return getattr(obj, "__wrapped__", obj)


def _review_count(layer) -> int:
    """Rows of a calcifications layer a reviewer decided on or labelled.

    The layer's features mirror the review (the review panel writes them),
    so this holds whether or not the review panel is on the layer now.
    """
    if layer is None:
        return 0
    feats = layer.features
    if not len(feats) or "status" not in feats:
        return 0
    return int(reviewed_mask(feats).sum())


def _error_text(exc: BaseException) -> str:
    """One line for a failed detection: a user error's own text, else the type too."""
    return str(exc) if isinstance(exc, NapariCalcError) else f"{type(exc).__name__}: {exc}"


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued)."""

    progress = Signal(float, str)
    #: all-images run: index, count, image name, fraction of that image, message
    batch_progress = Signal(int, int, str, float, str)


class DetectWidget(Container):
    """Dock widget: run detection on an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.

    Attributes
    ----------
    worker : napari.qt.threading.FunctionWorker or GeneratorWorker or None
        The running detection (one image, or all of them), if any.
    last_detections : Detections or None
        The last successful result.
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.worker = None
        self._refusal = False  # the status line refuses the layer chosen
        self._status_layer = None  # the layer the status line is about
        self.last_detections = None
        self._cancel_event = threading.Event()
        self._setting_preset = False
        self._relay = _Relay()
        self._relay.progress.connect(self._on_progress)
        self._relay.batch_progress.connect(self._on_batch_progress)
        self._batch = None  # the all-images run under way: its layers and outcomes

        self.image_combo = ComboBox(label="Image", choices=self._image_choices,
                                    tooltip="Image layer to detect on (captured when Run is pressed).")
        self.spacing = FloatSpinBox(label="Pixel spacing (mm)", min=0.005, max=2.0, step=0.005,
                                    value=DEFAULT_SPACING_MM,
                                    tooltip="Pixel size in mm. Taken from the file when it has one; "
                                            "enter it here when the layer has no physical scale.")
        self.slice_spacing = FloatSpinBox(label="Slice spacing (mm)", min=0.01, max=50.0, step=0.1,
                                          value=DEFAULT_SLICE_SPACING_MM, visible=False,
                                          tooltip="Distance between the slices of a stack in mm, for a "
                                                  "stack without physical scale (tomosynthesis: "
                                                  "usually 1 mm). It sets z_mm and the 3-D clusters.")
        self.spacing_note = Label(value="")
        self.preset = ComboBox(label="Preset", choices=list(PRESETS) + [CUSTOM_PRESET],
                               value=next(iter(PRESETS)),
                               tooltip="Parameter sets by acquisition type. Editing a value "
                                       "switches to 'Custom'.")
        defaults = DetectionParams()
        self.params = {}
        for name, (label, kind, lo, hi, step, tip) in PARAM_SPECS.items():
            val = getattr(defaults, name)
            if kind == "float":
                w = FloatSpinBox(label=label, min=lo, max=hi, step=step, value=val, tooltip=tip)
            elif kind == "int":
                w = SpinBox(label=label, min=lo, max=hi, step=step, value=int(val), tooltip=tip)
            else:
                w = CheckBox(text=label, value=bool(val), tooltip=tip)
                w.label = ""
            w.changed.connect(self._on_param_changed)
            self.params[name] = w
        self.run_button = PushButton(text="Run detection", tooltip="Detect on the chosen image layer.")
        self.run_all_button = PushButton(
            text="Run on all images",
            tooltip="Detect on every image layer open (e.g. the views of an exam), one after another, "
                    "with the parameters above (with a preset chosen, stacks get the tomosynthesis preset and "
                    "2-D images a 2-D one). Images whose results are reviewed are left as they are.")
        self.cancel_button = PushButton(text="Cancel", enabled=False, tooltip="Stop the running detection.")
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.status = Label(value="Choose an image layer and press Run.")
        self.buttons = Container(widgets=[self.run_button, self.run_all_button, self.cancel_button],
                                 layout="horizontal", labels=False)

        main = [self.params[k] for k in MAIN_PARAMS]
        self.advanced = Container(widgets=[w for k, w in self.params.items() if k not in MAIN_PARAMS],
                                  labels=True)
        #: the panel's rows, in a scroll area (the panel fits a short screen)
        self.form = Container(labels=True)
        self.form.extend([self.image_combo, self.spacing, self.slice_spacing, self.spacing_note, self.preset,
                          *main])
        from superqt import QCollapsible

        self.advanced_box = QCollapsible("Advanced parameters")
        self.advanced_box.addWidget(self.advanced.native)
        self.advanced.native.setContentsMargins(0, 0, 0, 0)
        self.form.native.layout().addWidget(self.advanced_box)
        self.form.extend([self.buttons, self.progress, self.status])
        self.form.native.layout().addStretch()  # rows at the top when there is room
        self.margins = (0, 0, 0, 0)
        self.native.layout().addWidget(PanelScroll(self.form.native))
        for w in (self.spacing_note, self.status):
            w.native.setWordWrap(True)
        elide_combo(self.image_combo.native)

        self.preset.changed.connect(self._on_preset)
        self.image_combo.changed.connect(self._on_image_changed)
        self.spacing.changed.connect(self._on_spacing_changed)
        self.slice_spacing.changed.connect(self._on_spacing_changed)
        self.run_button.clicked.connect(self.run)
        self.run_all_button.clicked.connect(self.run_all)
        self.cancel_button.clicked.connect(self.cancel)
        ev = self.viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self._refresh_choices)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._on_preset(self.preset.value)
        self._refresh_choices()

    # ---------------------------------------------------------------- layers
    def _image_choices(self, *_):
        from napari.layers import Image

        return [(lay.name, lay) for lay in self.viewer.layers if isinstance(lay, Image) and not lay.rgb]

    def _refresh_choices(self, *_):
        for lay in self.viewer.layers:  # follow renames
            try:
                lay.events.name.connect(self._refresh_choices, unique=True)
            except TypeError:  # pragma: no cover - older psygnal/napari
                pass
        self.image_combo.reset_choices()
        self._on_image_changed(self.image_combo.value)

    def _on_active_layer(self, event=None):
        from napari.layers import Image

        lay = self.viewer.layers.selection.active
        if isinstance(lay, Image) and lay in [c[1] for c in self._image_choices()] and self.worker is None:
            self.image_combo.value = lay

    def _on_spacing_changed(self, *_):
        """Keep the 'no physical pixel size' note on the value entered."""
        asked = self.spacing.enabled or not self.slice_spacing.native.isHidden()
        if asked and self.image_combo.value is not None:
            self._on_image_changed()

    def _on_image_changed(self, layer=None):
        layer = self.image_combo.value
        if self.worker is None and (self._refusal or _unwrap(self._status_layer) is not _unwrap(layer)):
            # it was about the layer chosen before: say what this one has
            self.status.value = self._results_text(layer)
            self._refusal = False
            self._status_layer = layer
        if layer is None:
            self.spacing.enabled = False
            self.slice_spacing.visible = False
            self.spacing_note.value = ""
            return
        self._suggest_preset(layer)
        sp, src = layer_spacing(layer)
        self.slice_spacing.visible = sp is None and layer.ndim == 3
        in_plane = self._known_in_plane(layer) if sp is None else None
        if in_plane is not None:
            # a stack whose file gives the pixel size but not the slice spacing
            self.spacing.value = float(min(in_plane))
            self.spacing.enabled = False
            self.spacing_note.value = (
                f"⚠ '{layer.name}' has no slice spacing. Detection will use "
                f"{self.slice_spacing.value:g} mm between slices (please check; in-plane "
                f"{' x '.join(f'{v:g}' for v in in_plane)} mm from the file), and it will be applied "
                f"to the layer.")
            self.spacing_note.native.setStyleSheet("color: #ffb000;")
        elif sp is None:
            self.spacing.enabled = True
            if layer.ndim == 3:
                which = (f"the spacings above ({self.spacing.value:g} mm in-plane, "
                         f"{self.slice_spacing.value:g} mm between slices, please check)")
            else:
                which = f"the spacing above ({self.spacing.value:g} mm, please check)"
            self.spacing_note.value = (f"⚠ '{layer.name}' has no physical pixel size. Detection will use "
                                       f"{which}, and it will be applied to the layer.")
            self.spacing_note.native.setStyleSheet("color: #ffb000;")
        else:
            self.spacing.value = float(min(sp[-2:]))
            self.spacing.enabled = False
            meta = (layer.metadata.get("napari_calc") or {}).get("image_metadata") or {}
            how = meta.get("spacing_source") or ("layer scale" if src == "scale" else "file")
            txt = " x ".join(f"{s:g}" for s in sp)
            self.spacing_note.value = f"Spacing {txt} mm (from {how})."
            self.spacing_note.native.setStyleSheet("")

    def _results_text(self, layer) -> str:
        """The status line for a layer just chosen: its results shown, if any."""
        if layer is None:
            return ""
        pts, shp = find_result_layers(self.viewer, layer.name)
        if pts is None:
            return ""
        k = f", {len(shp.data)} clusters" if shp is not None else ""
        return f"'{layer.name}': {len(pts.data)} calcifications{k} in '{pts.name}' (Run replaces them)."

    # ---------------------------------------------------------------- params
    @staticmethod
    def _preset_for(ndim: int, current: str) -> str:
        """The preset a ``ndim``-D layer gets when ``current`` is chosen:
        stacks the tomosynthesis one, 2-D images a 2-D one (``current`` when
        it fits, or when it is :data:`CUSTOM_PRESET`: parameters set by hand
        are kept)."""
        if current == CUSTOM_PRESET:
            return current
        tomo = [k for k in PRESETS if "tomo" in k.lower()]
        flat = [k for k in PRESETS if "tomo" not in k.lower()]
        if ndim == 3 and tomo and current not in tomo:
            return tomo[0]
        if ndim == 2 and flat and current not in flat:
            return flat[0]
        return current

    def _suggest_preset(self, layer) -> None:
        """Stacks get the tomosynthesis preset, 2-D images a 2-D one (unless
        the user has set the parameters by hand)."""
        name = self._preset_for(layer.ndim, self.preset.value)
        if name != self.preset.value:
            self.preset.value = name

    def _params_for(self, layer) -> dict:
        """The parameters an all-images run uses on ``layer``: the panel's,
        except that with a preset chosen (not hand-set parameters) each
        image gets the preset choosing it would give (a stack among 2-D
        views: the tomosynthesis preset, as for a single Run on it)."""
        params = self.get_params()
        name = self._preset_for(layer.ndim, self.preset.value)
        if name == self.preset.value or name not in PRESETS:
            return params
        defaults = DetectionParams()
        return {k: PRESETS[name].get(k, getattr(defaults, k)) for k in params}

    def _on_preset(self, name):
        if name == CUSTOM_PRESET or name not in PRESETS:
            return
        self._setting_preset = True
        try:
            defaults = DetectionParams()
            for key, w in self.params.items():
                w.value = PRESETS[name].get(key, getattr(defaults, key))
        finally:
            self._setting_preset = False

    def _on_param_changed(self, *_):
        if self._setting_preset:
            return
        self.preset.value = CUSTOM_PRESET

    def get_params(self) -> dict:
        """The detection parameters currently set in the panel."""
        names = {f.name for f in fields(DetectionParams)}
        return {k: w.value for k, w in self.params.items() if k in names}

    # ---------------------------------------------------------------- run
    @staticmethod
    def _known_in_plane(layer):
        """The in-plane spacing the file gave a stack without slice spacing
        (``metadata["in_plane_spacing_mm"]``), or None."""
        if layer.ndim != 3:
            return None
        meta = (layer.metadata.get("napari_calc") or {}).get("image_metadata") or {}
        v = meta.get("in_plane_spacing_mm")
        try:
            row, col = (float(x) for x in v)
        except (TypeError, ValueError):
            return None
        return (row, col) if row > 0 and col > 0 else None

    def _spacing_for(self, layer):
        sp, _ = layer_spacing(layer)
        if sp is not None:
            return tuple(sp), False
        in_plane = self._known_in_plane(layer)
        if in_plane is not None:
            return (float(self.slice_spacing.value),) + in_plane, True
        v = float(self.spacing.value)
        return ((float(self.slice_spacing.value), v, v) if layer.ndim == 3 else (v, v)), True

    def _job_image(self, layer, *, entered_spacing: bool = True):
        """The image to detect on ``layer``, and the spacing entered for it.

        Parameters
        ----------
        layer : napari.layers.Image
            A 2-D image or a 3-D stack.
        entered_spacing : bool
            Whether the spacing entered in the panel may stand in for a
            spacing the layer lacks. Only for the layer chosen in the panel:
            its note shows the value (an all-images run must not spread a
            guess made for one image over the others).

        Returns
        -------
        image : MammoImage
        user_spacing : tuple of float or None
            The spacing entered in the panel (applied to the layer with the
            results), or None when the layer has its own.

        Raises
        ------
        MissingSpacingError
            The layer lacks a spacing and ``entered_spacing`` is False.
        """
        import numpy as np

        spacing, user_spacing = self._spacing_for(layer)
        if user_spacing and not entered_spacing:
            what = ("no slice spacing" if self._known_in_plane(layer) is not None
                    else "no physical pixel size")
            raise MissingSpacingError(f"{what}; choose it as the Image above, enter it and press Run")
        data = layer.data[0] if layer.multiscale else layer.data
        pixels = np.asarray(data)
        meta = dict(((layer.metadata.get("napari_calc") or {}).get("image_metadata")) or {})
        meta.setdefault("name", layer.name)
        if user_spacing:
            meta["spacing_source"] = "user"
        image = MammoImage(pixels=pixels, spacing_mm=spacing, metadata=meta)
        return image, (spacing if user_spacing else None)

    def _start(self, worker, text: str):
        """Show ``worker`` as the running detection and start it."""
        self.worker = worker
        self.run_button.enabled = False
        self.run_all_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.status.value = text
        worker.start()
        return worker

    def run(self):
        """Start detection on the chosen image layer; returns the worker."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return self.worker
        layer = self.image_combo.value
        if layer is None:
            self.status.value = "No image layer: open an image or the sample first."
            self._refusal = True
            return None
        if layer.ndim not in (2, 3):
            self.status.value = f"'{layer.name}' is {layer.ndim}-D; need a 2-D image or a 3-D stack."
            self._refusal = True
            return None
        image, user_spacing = self._job_image(layer)
        params = self.get_params()

        self._target = layer
        self._target_user_spacing = user_spacing
        self._cancel_event = threading.Event()
        cancel = self._cancel_event.is_set
        relay = self._relay

        def job():
            from ..core.detect import detect

            return detect(image, progress=lambda f, m: relay.progress.emit(float(f), str(m)),
                          cancel=cancel, **params)

        # connecting "errored" here stops napari from re-raising (we report it)
        worker = create_worker(job, _start_thread=False,
                               _connect={"returned": self._on_returned, "errored": self._on_errored,
                                         "finished": self._on_finished})
        return self._start(worker, f"Detecting on '{layer.name}'…")

    # ---------------------------------------------------------------- all images
    def detectable_layers(self) -> list:
        """The image layers "Run on all images" detects on, in layer-list order:
        2-D images and 3-D stacks, not RGB, not napari-calc's own outputs."""
        from napari.layers import Image

        return [lay for lay in self.viewer.layers
                if isinstance(lay, Image) and not lay.rgb and lay.ndim in (2, 3)
                and not (lay.metadata.get("napari_calc") or {}).get("kind")]

    def run_all(self):
        """Detect on every image layer open, one after another, in one worker.

        Each image's results are shown as soon as it is done, through the
        same code as :meth:`run`, with the panel's parameters (with a preset
        chosen, each image gets the preset a single Run on it would: see
        :meth:`_params_for`). An image that cannot be detected on (no
        pixel spacing, too small, ...) is reported at the end and the others
        go on. An image whose results hold a review is left as it is (a
        single Run re-detects it and carries the review over, saying what
        was matched, kept or dropped: for a reviewer to see, image by image).

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The worker, or None when there is no image to detect on.
        """
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return self.worker
        layers = self.detectable_layers()
        if not layers:
            self.status.value = "No image layer to detect on: open an image, an exam folder or the sample first."
            self._refusal = True
            return None
        chosen = _unwrap(self.image_combo.value)
        n = len(layers)
        names = [lay.name for lay in layers]
        outcomes = [None] * n  # per image: ("done", det) / ("failed", reason) / ("kept", reason)
        images, user_spacing = [None] * n, [None] * n
        params = [self._params_for(lay) for lay in layers]
        for i, lay in enumerate(layers):
            reviewed = _review_count(find_result_layers(self.viewer, lay.name)[0])
            if reviewed:
                outcomes[i] = ("kept", reviewed)
                continue
            try:
                images[i], user_spacing[i] = self._job_image(lay, entered_spacing=_unwrap(lay) is chosen)
            except Exception as exc:  # noqa: BLE001 - said at the end; the others go on
                outcomes[i] = ("failed", _error_text(exc))
        self._batch = {"layers": layers, "names": names, "user_spacing": user_spacing,
                       "outcomes": outcomes, "error": None}
        self._cancel_event = threading.Event()
        cancel = self._cancel_event.is_set
        relay = self._relay

        def job():
            from ..core.detect import detect

            for i, image in enumerate(images):
                if image is None:  # failed or kept already (said at the end)
                    continue
                if cancel():
                    return
                relay.batch_progress.emit(i, n, names[i], 0.0, "starting")
                try:
                    det = detect(image, cancel=cancel, **params[i],
                                 progress=lambda f, m, i=i: relay.batch_progress.emit(
                                     i, n, names[i], float(f), str(m)))
                except DetectionCancelled:
                    return  # the image in flight leaves nothing
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
                    yield i, None, exc
                    continue
                yield i, det, None

        worker = create_worker(job, _start_thread=False,
                               _connect={"yielded": self._on_batch_yielded, "errored": self._on_errored,
                                         "finished": self._on_finished})
        return self._start(worker, f"Detecting on {n} images…")

    def _on_batch_progress(self, index, count, name, fraction, message):
        if self.worker is None or self._batch is None or self._cancel_event.is_set():
            return  # "Cancelling…" stays until the worker stops
        done = index + max(0.0, min(1.0, fraction))
        self.progress.value = int(round(100 * done / count))
        self.status.value = f"{index + 1} of {count}: {name} — {message}…"

    def _on_batch_yielded(self, item):
        """One image of an all-images run is done: show it as a single Run would."""
        index, det, exc = item
        b = self._batch
        layer = b["layers"][index]
        reviewed = _review_count(find_result_layers(self.viewer, layer.name)[0])
        if exc is not None:
            b["outcomes"][index] = ("failed", _error_text(exc))
        elif self._cancel_event.is_set():
            pass  # Cancel was pressed as it finished: like the one in flight, it adds nothing
        elif reviewed:  # reviewed while the others ran: the review stays
            b["outcomes"][index] = ("kept", reviewed)
        elif self._show_result(layer, det, b["user_spacing"][index]) is None:
            b["outcomes"][index] = ("failed", "the layer was removed during the run")
        else:
            b["outcomes"][index] = ("done", det)

    def _batch_summary(self, b) -> str:
        """The one status line an all-images run ends with."""
        names, out = b["names"], b["outcomes"]
        n = len(names)
        done = [o[1] for o in out if o is not None and o[0] == "done"]
        cands = sum(len(d.calcifications) for d in done)
        clusters = sum(len(d.clusters) for d in done)
        found = f"{cands} candidates, {clusters} clusters"
        if self._cancel_event.is_set():
            text = (f"Cancelled: {len(done)} of {n} images done ({found}); "
                    "no results added for the others.")
        elif len(done) == n:
            text = f"All {n} images done: {found}."
        else:
            text = f"{len(done)} of {n} images done ({found})."
        for name, o in zip(names, out):
            if o is not None and o[0] == "failed":
                text += f" '{name}' failed: {o[1]}."
        kept = [f"'{name}'" for name, o in zip(names, out) if o is not None and o[0] == "kept"]
        if len(kept) == 1:
            text += (f" {kept[0]} left as it is: its results are reviewed "
                     "(Run on it alone to re-detect; the review is carried over).")
        elif kept:
            text += (f" {', '.join(kept)} left as they are: their results are reviewed "
                     "(Run on each alone to re-detect; the review is carried over).")
        if b["error"] is not None:
            text += f" Stopped by an error: {b['error']}."
        return text

    def cancel(self):
        """Ask the running detection to stop (it stops at the next check)."""
        if self.worker is None:
            return
        self._cancel_event.set()
        self.worker.quit()
        self.cancel_button.enabled = False
        self.status.value = "Cancelling…"

    def _on_progress(self, fraction, message):
        if self.worker is None:
            return
        self.progress.value = int(round(100 * max(0.0, min(1.0, fraction))))
        self.status.value = f"'{self._target.name}': {message}…"

    def _on_returned(self, det):
        layer = self._target
        if self._cancel_event.is_set():
            self.status.value = "Cancelled; no results added."
            return
        if self._show_result(layer, det, self._target_user_spacing, select=True) is None:
            self.status.value = f"Image layer '{layer.name}' was removed during the run; results discarded."
            return
        self.progress.value = 100

    def _show_result(self, layer, det, user_spacing=None, *, select: bool = False):
        """Put the detections ``det`` of ``layer`` on screen (both kinds of run).

        Adds or updates the layer's result layers (:func:`show_detections`),
        applies a spacing entered in the panel to the image so that results
        and image overlay, and says what was found in the status line.

        Returns
        -------
        napari.layers.Points or None
            The calcifications layer; None when ``layer`` is gone.
        """
        if layer not in self.viewer.layers:
            return None
        if user_spacing is not None:
            sp = user_spacing
            layer.scale = sp
            try:
                layer.units = ("mm",) * len(sp)
            except Exception:  # pragma: no cover
                pass
            md = dict(layer.metadata)
            nc = dict(md.get("napari_calc") or {})
            nc["spacing_mm"] = tuple(sp)
            nc.setdefault("image_metadata", {})["spacing_source"] = "user"
            md["napari_calc"] = nc
            layer.metadata = md
            self.viewer.reset_view()
            self._on_image_changed()
        carried = ""
        prev = find_result_layers(self.viewer, layer.name)[0]
        n_reviewed = 0 if under_review(prev) else _review_count(prev)
        if n_reviewed:
            # a re-run replaces the layer's table: the review goes onto the
            # new candidates (it was lost; a review panel on this very layer
            # does it itself, from its session, and says so)
            old = detections_from_layers(prev)
            previous = old.calcifications if old.extra is None else pd.concat(
                [old.calcifications, old.extra], axis=1)
            det, summary = carry_over(previous, det)
            carried = (f" The review ({counted(n_reviewed, 'decision')}) is carried over: "
                       f"{summary['matched']} matched, {summary['kept_as_added']} kept as added, "
                       f"{summary['dropped']} dropped.")
        self.last_detections = det
        pts, _ = show_detections(self.viewer, det, layer)
        if select:  # not during an all-images run: the selection would jump under the user
            self.viewer.layers.selection.active = pts
        n, k = len(det.calcifications), len(det.clusters)
        likely = int((det.calcifications["score"] >= 0.5).sum()) if n else 0
        secs = det.params.get("seconds")
        took = f" in {secs:.2f} s" if isinstance(secs, (int, float)) else ""
        self.status.value = (f"'{layer.name}': {n} candidates ({likely} with score ≥ 0.5), "
                             f"{k} clusters{took}.{carried}")
        self._status_layer = layer
        return pts

    def _on_errored(self, exc):
        if isinstance(exc, DetectionCancelled):
            self.status.value = "Cancelled; no results added."
            return
        msg = _error_text(exc)
        if self._batch is not None:  # not an image's failure (those are caught): said at the end
            self._batch["error"] = msg
        else:
            self.status.value = f"Error: {msg}"
        try:
            from napari.utils.notifications import show_error

            show_error(f"napari-calc: {msg}")
        except Exception:  # pragma: no cover
            pass

    def _on_finished(self):
        self.worker = None
        self.run_button.enabled = True
        self.run_all_button.enabled = True
        self.cancel_button.enabled = False
        batch, self._batch = self._batch, None
        if batch is not None:
            self.status.value = self._batch_summary(batch)
            # the summary stays until another layer is chosen
            self._status_layer = self.image_combo.value
            self._refusal = False
            if not self._cancel_event.is_set():
                self.progress.value = 100
                if any(o is not None and o[0] == "failed" for o in batch["outcomes"]):
                    try:  # also where napari shows errors: the panel may be scrolled or hidden
                        from napari.utils.notifications import show_warning

                        show_warning(f"napari-calc: {self.status.value}")
                    except Exception:  # pragma: no cover
                        pass
        if self._cancel_event.is_set():
            self.progress.value = 0
