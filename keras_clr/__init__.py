"""keras_clr: the learning-rate range test and cyclical / one-cycle schedules
for Keras 3, as callbacks for `model.fit`."""

from keras_clr import schedules
from keras_clr.callbacks import CyclicLR
from keras_clr.callbacks import OneCycle
from keras_clr.callbacks import WarmupStableDecay
from keras_clr.discriminative import discriminative_optimizer
from keras_clr.fine_tuning import FineTuneHistory
from keras_clr.fine_tuning import fine_tune
from keras_clr.race import MaxLRRace
from keras_clr.range_test import LRFinder
from keras_clr.range_test import find_lr
from keras_clr.range_test.sweep import WeightDecaySweep
from keras_clr.results import LRFinderResult
from keras_clr.tuning import MaxLRSearch
from keras_clr.tuning import fit_one_cycle
from keras_clr.tuning import tune_max_lr

__version__ = "0.2.0.dev0"

__all__ = [
    "CyclicLR",
    "FineTuneHistory",
    "LRFinder",
    "LRFinderResult",
    "MaxLRRace",
    "MaxLRSearch",
    "OneCycle",
    "WarmupStableDecay",
    "WeightDecaySweep",
    "discriminative_optimizer",
    "find_lr",
    "fine_tune",
    "fit_one_cycle",
    "schedules",
    "tune_max_lr",
]
