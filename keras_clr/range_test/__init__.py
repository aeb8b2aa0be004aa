"""The learning-rate range test: the `LRFinder` callback and `find_lr()`.

| module | holds |
|---|---|
| `callback.py` | `LRFinder`, and the state of one run |
| `record.py` | the traced step and the record it writes |
| `state.py` | snapshot and restore of the model and optimizer |
| `data.py` | the data kinds and `fit` options, the plan of epochs |
| `api.py` | `find_lr` and repeats |
| `sweep.py` | the weight-decay sweep and its result, `WeightDecaySweep` |

The smoothing and the stop rule are `keras_clr.stopping`; the suggestions
and the result, `keras_clr.results`.
"""

from keras_clr.range_test.api import find_lr
from keras_clr.range_test.callback import LRFinder

__all__ = ["LRFinder", "find_lr"]
