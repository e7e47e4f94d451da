"""Combo boxes that show a long layer name in full or shortened in the middle.

A layer name longer than its combo box was cut off at the right
(``sample-mammogram calcificatio``), so that two images' layers could not
be told apart; shortened in the middle, both its start and its end show
(``Calc-Training_P_0…_CC calcifications``), and the full name is the
tooltip.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox, QStylePainter

__all__ = ["elide_combo", "shown_text"]


def shown_text(combo: QComboBox) -> str:
    """The text ``combo`` shows: its current text, elided to fit."""
    opt = QStyleOptionComboBox()
    combo.initStyleOption(opt)
    rect = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, opt,
                                        QStyle.SubControl.SC_ComboBoxEditField, combo)
    return combo.fontMetrics().elidedText(combo.currentText(), Qt.TextElideMode.ElideMiddle, rect.width() - 2)


class _Elide(QObject):
    """Paints the combo box with :func:`shown_text`, and puts its full text
    in the tooltip when one is asked for (an event filter)."""

    def __init__(self, combo: QComboBox):
        super().__init__(combo)
        self._about = combo.toolTip()

    def eventFilter(self, combo, event):
        kind = event.type()
        if kind == QEvent.Type.Paint and isinstance(combo, QComboBox) and not combo.isEditable():
            opt = QStyleOptionComboBox()
            combo.initStyleOption(opt)
            p = QStylePainter(combo)
            p.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, opt)
            opt.currentText = shown_text(combo)
            p.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, opt)
            p.end()
            return True
        if kind == QEvent.Type.ToolTip and isinstance(combo, QComboBox):
            combo.setToolTip("\n".join(t for t in (combo.currentText(), self._about) if t))
        return False


def elide_combo(combo: QComboBox) -> None:
    """Show ``combo``'s text shortened in the middle when it does not fit
    (in the list too), with the full text in the tooltip."""
    combo.installEventFilter(_Elide(combo))
    combo.view().setTextElideMode(Qt.TextElideMode.ElideMiddle)
