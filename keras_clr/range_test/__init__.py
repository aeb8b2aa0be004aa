"""The learning-rate range test: the `LRFinder` callback and `find_lr()`.

| module | holds |
|---|---|
| `callback.py` | `LRFinder` and the traced step's record |
| `state.py` | snapshot and restore of the model and optimizer |
| `data.py` | the data kinds and `fit` options, the plan of epochs |
| `api.py` | `find_lr`, repeats, the weight-decay sweep |

The smoothing and the stop rule are `keras_clr.stopping`; the suggestions
and the result, `keras_clr.results`.
"""

from keras_clr.range_test.api import find_lr
from keras_clr.range_test.callback import LRFinder

__all__ = ["LRFinder", "find_lr"]
