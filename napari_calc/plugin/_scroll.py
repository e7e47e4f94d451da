"""A scroll area for the dock panels, so that they fit a short screen.

napari stacks the docked panels in columns (the detect panel under the
layer controls and the layer list); with each panel as tall as its
contents, the window could not be made shorter than about 1000 px, taller
than a 1280x800 laptop screen. In a :class:`PanelScroll` a panel asks for
its full height when there is room and scrolls when there is not.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QApplication, QFrame, QScrollArea, QStyle, QWidget

__all__ = ["PanelScroll", "MIN_PANEL_HEIGHT", "screen_height"]

#: The height a panel can be squeezed to on a short screen (its contents then scroll).
MIN_PANEL_HEIGHT = 160
#: What else shares a column of the window with a panel: napari's layer
#: controls and layer list, the menu and status bars, title bars.
SHARED_HEIGHT = 600


def screen_height(widget: QWidget | None = None) -> int | None:
    """Available height of the screen ``widget`` is on (else the primary
    screen), in pixels; None without a screen."""
    screen = widget.screen() if widget is not None else None
    if screen is None:
        screen = QApplication.primaryScreen()
    return None if screen is None else screen.availableGeometry().height()


class PanelScroll(QScrollArea):
    """Scrolls ``content`` vertically; the width is always the content's."""

    def __init__(self, content: QWidget, parent=None):
        super().__init__(parent)
        self.setWidget(content)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)

    def _bar(self) -> int:
        """Width the vertical scroll bar takes from the content when it shows."""
        style = self.style()
        bar = self.verticalScrollBar()
        spacing = style.pixelMetric(QStyle.PixelMetric.PM_ScrollView_ScrollBarSpacing, None, self)
        return (max(bar.sizeHint().width(), style.pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self))
                + max(spacing, 0) + 2 * self.frameWidth())

    def eventFilter(self, obj, event):
        # the content's size changed (a longer status line, a row shown):
        # the dock follows (a scroll area does not pass that on by itself)
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)

    def sizeHint(self) -> QSize:
        hint = self.widget().sizeHint()
        return QSize(hint.width() + self._bar(), hint.height())

    def minimumSizeHint(self) -> QSize:
        # as wide as the content (and its scroll bar, when it shows), so
        # that nothing is cut off at the side; no taller than leaves the
        # window room on this screen (a few rows on a 1280x800 one), so
        # that on a tall screen the panel keeps its full height
        content = self.widget()
        m = content.minimumSizeHint()
        h = m.height()
        if content.hasHeightForWidth():  # wrapped lines: as tall as they are at this width
            h = max(h, content.heightForWidth(max(self.viewport().width(), m.width())))
        avail = screen_height(self)
        room = MIN_PANEL_HEIGHT if avail is None else max(MIN_PANEL_HEIGHT, avail - SHARED_HEIGHT)
        return QSize(m.width() + self._bar(), min(h, room))
