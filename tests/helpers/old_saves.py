"""Saved `.keras` files as an older version of tfsparse wrote them: the same
archive with its weights file edited (a variable that did not exist yet removed)."""

import zipfile

import h5py


def edit_weights(saved, edited, edit):
    """Writes `saved` (a .keras file) to `edited` after `edit(weights)` has
    changed its open `model.weights.h5` (an `h5py.File`)."""
    unpacked = edited.parent / f"{edited.stem}-unpacked"
    with zipfile.ZipFile(saved) as archive:
        archive.extractall(unpacked)
    with h5py.File(unpacked / "model.weights.h5", "r+") as weights:
        edit(weights)
    with zipfile.ZipFile(edited, "w") as archive:
        for path in unpacked.iterdir():
            archive.write(path, path.name)
