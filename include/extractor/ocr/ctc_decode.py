"""RapidOCR's CTC decoding fed with the recogniser's best path instead of its full output.

``rec_model.add_best_path_output`` makes the recogniser return, per time step, the index
and probability of its best class (``[batch, steps, 2]``); ``BestPathDecode`` hands them to
RapidOCR's own ``CTCLabelDecode.decode``, which turns them into text and a score exactly as
RapidOCR does after its ``argmax``/``max`` over the full output. Imports rapidocr: import
this module only where the engine is built.
"""

from __future__ import annotations

import numpy as np
from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode


class BestPathDecode(CTCLabelDecode):
    """``CTCLabelDecode`` whose input is the ``BEST_PATH`` tensor, not the class probabilities."""

    def __call__(self, preds: np.ndarray, return_word_box: bool = False, **kwargs):
        if preds.ndim != 3 or preds.shape[2] != 2:
            raise ValueError(f"expected the recogniser's best path [batch, steps, 2], got {preds.shape}")
        return self.decode(preds[:, :, 0].astype(np.int64), preds[:, :, 1], return_word_box,
                           kwargs.get("wh_ratio_list", (1.0,)), kwargs.get("max_wh_ratio", 1.0),
                           remove_duplicate=True)
