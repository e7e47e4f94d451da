"""Keyboard shortcuts that a panel's widgets pass on instead of taking.

napari's keymaps (``viewer.bind_key``, ``layer.bind_key``) see a key only
while the canvas has the focus. A click on a table row leaves the focus in
the table, and a table takes letters (A, N, Shift-N...) for its keyboard
search: the panel's shortcuts did nothing. :func:`pass_keys_on` puts an
event filter on such widgets that runs the shortcut instead; the other
keys (arrows, Page Up, typing to search) keep their use.
"""

from __future__ import annotations

from typing import Callable, Iterable

from qtpy.QtCore import QEvent, QObject, Qt

__all__ = ["key_combo", "pass_keys_on"]

_MODIFIERS = {"Control": Qt.KeyboardModifier.ControlModifier, "Shift": Qt.KeyboardModifier.ShiftModifier,
              "Alt": Qt.KeyboardModifier.AltModifier, "Meta": Qt.KeyboardModifier.MetaModifier}


def _flag(value) -> int:
    """A Qt key or modifier as an int (PyQt6 enums are not ints)."""
    return int(getattr(value, "value", value))


_MODIFIER_MASK = 0
for _m in _MODIFIERS.values():
    _MODIFIER_MASK |= _flag(_m)


def key_combo(spec: str) -> tuple[int, int]:
    """(Qt key, modifiers) of a key in napari's spelling (``"Control-Shift-Z"``).

    Parameters
    ----------
    spec : str
        Modifiers (``Control``, ``Shift``, ``Alt``, ``Meta``) and a Qt key
        name (``A``, ``Space``, ``Delete``...), joined by ``-``.

    Returns
    -------
    tuple of int
        What :func:`pass_keys_on` compares a key event's key and modifiers to.
    """
    *mods, name = spec.split("-")
    m = 0
    for x in mods:
        m |= _flag(_MODIFIERS[x])
    return _flag(getattr(Qt.Key, f"Key_{name}")), m


class _PassOn(QObject):
    """The event filter of :func:`pass_keys_on`."""

    def __init__(self, keys: dict[tuple[int, int], Callable[[], object]], parent: QObject | None = None):
        super().__init__(parent)
        self._keys = keys

    def eventFilter(self, obj, event):
        kind = event.type()
        if kind in (QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride):
            run = self._keys.get((_flag(event.key()), _flag(event.modifiers()) & _MODIFIER_MASK))
            if run is not None:
                event.accept()  # an override too: the key is ours, not an application shortcut's
                if kind == QEvent.Type.KeyPress:
                    run()
                return True
        return False


def pass_keys_on(widgets: Iterable[QObject], keys: dict[str, Callable[[], object]],
                 parent: QObject) -> QObject:
    """Make ``widgets`` run the shortcuts ``keys`` rather than take those keys.

    Parameters
    ----------
    widgets : iterable of QObject
        The widgets that would take the keys for themselves (tables), or
        that see the keys their children leave (a panel).
    keys : dict
        Key in napari's spelling (``"Shift-N"``) -> what it does (called
        without arguments).
    parent : QObject
        Owns the event filter (the panel).

    Returns
    -------
    QObject
        The event filter, installed on each of ``widgets``.
    """
    f = _PassOn({key_combo(k): run for k, run in keys.items()}, parent)
    for w in widgets:
        w.installEventFilter(f)
    return f
