"""The learned line picker (placeholder until weights are trained; see train_picker)."""

from __future__ import annotations


def load_default_picker():
    """The picker shipped with the package, or None when no weights are bundled."""
    return None
