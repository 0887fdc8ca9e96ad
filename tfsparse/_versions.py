"""The one record of the versions that determine a result (training runs and
export reports both store it)."""

import importlib
import importlib.metadata
import platform

# Modules; a missing one (TFP is not needed for a dense model, LiteRT only for
# TFLite checks) is recorded as None.
PACKAGES = ("tensorflow", "keras", "tensorflow_probability", "ai_edge_litert")


def _version(name):
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    version = getattr(module, "__version__", None)
    if version is None:  # LiteRT has no __version__: its distribution's
        try:
            version = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            return None
    return version


def versions():
    """Python's version and each of `PACKAGES`' (None where not installed)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in PACKAGES}}
