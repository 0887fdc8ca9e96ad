"""Runs the Python example of the README's "Example" section in a temporary
directory, with `epochs=30` replaced by `--epochs` (default 2). `make package`
runs it with the installed wheel, outside the repository."""

import argparse
import os
import re
import tempfile

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


def example_code(epochs=2):
    with open(README) as f:
        section = f.read().split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    if "epochs=30" not in code:
        raise ValueError("The README's example no longer trains with epochs=30.")
    return code.replace("epochs=30", f"epochs={epochs}")


def run(epochs=2, directory=None):
    """Runs the example in `directory` (a new temporary one by default) and
    returns its namespace."""
    directory = directory or tempfile.mkdtemp(prefix="tfsparse_example_")
    previous = os.getcwd()
    os.chdir(directory)
    try:
        namespace = {}
        exec(example_code(epochs), namespace)
        return namespace
    finally:
        os.chdir(previous)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    namespace = run(parser.parse_args().epochs)
    import tfsparse

    print(
        f"README example ran with tfsparse from {os.path.dirname(tfsparse.__file__)}: "
        f"{namespace['small'].count_params()} parameters after compaction"
    )
