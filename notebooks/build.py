"""Writes (and optionally executes) the notebooks from their cell lists.

    python notebooks/build.py            # write the .ipynb files
    python notebooks/build.py --execute  # ... and run them (full runs, slow)

The notebooks' code lives in `notebooks/cells/*.py` as plain Python with
`# %% [markdown]` / `# %%` cell markers, so that it reviews like code; the
.ipynb files are generated from them and committed with their outputs.
Setting `TFSPARSE_FAST=1` shortens every training run (the tests do that).
"""

import argparse
import glob
import os

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
CELLS = os.path.join(HERE, "cells")


def read_cells(path):
    """Splits a `# %%`-marked script into (kind, source) cells."""
    cells, kind, lines = [], None, []
    with open(path) as f:
        for line in f.read().splitlines():
            if line.startswith("# %%"):
                if kind is not None:
                    cells.append((kind, "\n".join(lines).strip("\n")))
                kind = "markdown" if "[markdown]" in line else "code"
                lines = []
            elif kind == "markdown":
                lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
            else:
                lines.append(line)
    if kind is not None:
        cells.append((kind, "\n".join(lines).strip("\n")))
    return cells


def to_notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for kind, source in cells:
        new = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(new(source))
    return nb


def execute(nb, timeout=1800):
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": HERE}}).execute()
    # TensorFlow's start-up messages on stderr are noise in a committed page.
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb


def sources():
    return sorted(glob.glob(os.path.join(CELLS, "*.py")))


def notebook_path(source):
    return os.path.join(HERE, os.path.splitext(os.path.basename(source))[0] + ".ipynb")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--execute", action="store_true")
    p.add_argument("names", nargs="*", help="notebook names (default: all)")
    args = p.parse_args(argv)
    for source in sources():
        name = os.path.splitext(os.path.basename(source))[0]
        if args.names and name not in args.names:
            continue
        nb = to_notebook(read_cells(source))
        if args.execute:
            execute(nb)
        nbformat.write(nb, notebook_path(source))
        print("wrote", notebook_path(source))


if __name__ == "__main__":
    main()
