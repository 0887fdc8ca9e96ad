"""tfsparse: learned sparsity for Keras 3 (see README.md).

The path through the library: `sparsify` a model, `fit` it with a
`SparsityScheduler`, look at `summary`, `compact` it into a smaller plain
Keras model and `export` that to SavedModel and TFLite.
"""

from tfsparse import gates, layers, schedules
from tfsparse.callbacks import SparsityScheduler, active_units
from tfsparse.compact import compact
from tfsparse.export import export, verify_tflite
from tfsparse.pruning import magnitude_sparsity, prune_by_magnitude
from tfsparse.sparse_model import SparseModel
from tfsparse.sparsify import METHODS, sparsify
from tfsparse.summary import summary

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "SparseModel",
    "SparsityScheduler",
    "active_units",
    "compact",
    "export",
    "gates",
    "layers",
    "magnitude_sparsity",
    "prune_by_magnitude",
    "schedules",
    "sparsify",
    "summary",
    "verify_tflite",
]
