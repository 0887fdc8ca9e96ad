"""The one record of the versions that determine a result (training runs and
export reports both store it)."""

import importlib
import importlib.metadata
import pathlib
import platform
import subprocess

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


def _git(checkout, *args):
    return subprocess.run(
        ["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def source_commit():
    """The git commit of the tfsparse checkout this package runs from, with
    "+changes" when its `tfsparse/` has uncommitted changes; None for an
    installed copy (or without git). Records made by different code at the
    same package versions then tell themselves apart."""
    checkout = pathlib.Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():  # a directory, or a file in a worktree
        return None
    try:
        commit = _git(checkout, "rev-parse", "HEAD")
        changed = _git(checkout, "status", "--porcelain", "--untracked-files=no", "--", "tfsparse")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if changed else "")


def versions():
    """Python's version, each of `PACKAGES`' (None where not installed) and
    `tfsparse_commit` (`source_commit`)."""
    return {
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
        "tfsparse_commit": source_commit(),
    }
