"""keras_clr: the learning-rate range test and cyclical / one-cycle schedules
for Keras 3, as callbacks for `model.fit`."""

from keras_clr import schedules
from keras_clr.callbacks import CyclicLR
from keras_clr.callbacks import OneCycle
from keras_clr.range_test import LRFinder
from keras_clr.range_test import find_lr
from keras_clr.range_test.sweep import WeightDecaySweep
from keras_clr.results import LRFinderResult

__version__ = "0.1.0"

__all__ = ["CyclicLR", "LRFinder", "LRFinderResult", "OneCycle", "WeightDecaySweep",
           "find_lr", "schedules"]
