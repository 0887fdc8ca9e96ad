"""tfsparse: learned sparsity for Keras 3 (see README.md)."""

from tfsparse import gates, layers
from tfsparse.sparse_model import SparseModel

__version__ = "0.1.0"
