"""MkDocs hook: serve bench/records/ (the benchmark plots) at the same path
as in the repository, so pages and the dashboard generator link plots as
`bench/records/NAME.png` without copies under docs/."""

import os

from mkdocs.structure.files import File

RECORDS = os.path.join("bench", "records")


def on_files(files, config):
    root = os.path.dirname(config["docs_dir"])
    for folder, _, names in os.walk(os.path.join(root, RECORDS)):
        for name in sorted(names):
            if name.endswith(".png"):
                path = os.path.relpath(os.path.join(folder, name), root)
                files.append(File(path, root, config["site_dir"], config["use_directory_urls"]))
    return files
