"""Unfinished benchmark runs, carried from one machine to the next in git.

A benchmark run checkpoints every epoch under `bench/results/runs/<run>/checkpoints`
(`tfsparse.resume`), which git ignores. A session on a fresh machine starts
from a clean clone, so those checkpoints would die with the machine and a
600-epoch row would never end. `save` packs each unfinished run's checkpoints
into `bench/inflight/<run>.tar.gz` (committed with the records); `restore`
unpacks them on the next machine and prints the commands that continue them
at their last saved epoch.

    python -m bench.inflight save      # before the session ends, runs stopped or paused
    python -m bench.inflight restore   # on the next machine, before restarting them
    python -m bench.inflight list

`save` also deletes the archive of a run that has since finished (its folder
holds `results.json` and no checkpoints), and keeps each archive under
`--max-mb` (5 by default: the repository is not a store of weights): a run
whose checkpoints pack larger keeps its previous archive, and says so. Pause
the runs (`kill -STOP`)
before `save`: a checkpoint is written in place at each epoch's end, and a
half-written one would not load.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import sys
import tarfile

from bench.run import COMMAND_FILE, DEFAULT_OUT

INFLIGHT = os.path.join("bench", "inflight")
MANIFEST = "manifest.json"
_ARCHIVE = ".tar.gz"
# A LeNet-5-Caffe run packs to 2-5 MB; one past a finished phase (its weights
# and optimizer state kept) to 7.3 MB.
MAX_MB = 5.0


def progress(checkpoints: str) -> dict[str, int | str]:
    """Per phase of a run: "finished", or the number of epochs logged."""
    out: dict[str, int | str] = {}
    for path in sorted(glob.glob(os.path.join(checkpoints, "*-epochs.jsonl"))):
        phase = os.path.basename(path)[: -len("-epochs.jsonl")]
        with open(path) as f:
            out[phase] = sum(1 for line in f if line.strip())
        if os.path.exists(os.path.join(checkpoints, f"{phase}.weights.h5")):
            out[phase] = "finished"
    return out


def _read_manifest(into: str) -> dict:
    path = os.path.join(into, MANIFEST)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write_manifest(into: str, manifest: dict):
    path = os.path.join(into, MANIFEST)
    if not manifest:
        if os.path.exists(path):
            os.remove(path)
        return
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


def _command(run_dir: str) -> str | None:
    path = os.path.join(run_dir, COMMAND_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


def _pack(checkpoints: str, archive: str, max_mb: float) -> int | None:
    """Writes `archive` whole (aside, then renamed) if it packs to at most
    `max_mb` megabytes and returns None; otherwise leaves any previous
    archive as it is and returns the size it would have had."""
    partial = archive + ".partial"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(checkpoints, arcname="checkpoints")
    size = os.path.getsize(partial)
    if size > max_mb * 1e6:
        os.remove(partial)
        return size
    os.replace(partial, archive)
    return None


def save(runs: str = DEFAULT_OUT, into: str = INFLIGHT, max_mb: float = MAX_MB) -> dict:
    """Packs every unfinished run under `runs` into `into` and drops the
    archives of runs that have finished there; returns the manifest. A run
    that packs to more than `max_mb` megabytes keeps its previous archive
    and manifest entry (if any), and a line on stderr says so."""
    if not max_mb > 0:
        raise ValueError(f"`max_mb` must be a positive number of megabytes; got {max_mb!r}.")
    os.makedirs(into, exist_ok=True)
    manifest = _read_manifest(into)
    for run_dir in sorted(glob.glob(os.path.join(runs, "*", ""))):
        run = os.path.basename(os.path.dirname(run_dir))
        checkpoints = os.path.join(run_dir, "checkpoints")
        archive = os.path.join(into, run + _ARCHIVE)
        if os.path.isdir(checkpoints):
            too_large = _pack(checkpoints, archive, max_mb)
            if too_large is not None:
                kept = manifest.get(run, {}).get("progress", "none")
                print(
                    f"{run}: packs to {too_large / 1e6:.1f} MB, over --max-mb {max_mb:g}; "
                    f"its archive in {into} stays at {kept}",
                    file=sys.stderr,
                )
                continue
            manifest[run] = {
                "command": _command(run_dir),
                "progress": progress(checkpoints),
                "saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
        elif os.path.exists(os.path.join(run_dir, "results.json")):
            if os.path.exists(archive):
                os.remove(archive)
            manifest.pop(run, None)
    _write_manifest(into, manifest)
    return manifest


def restore(runs: str = DEFAULT_OUT, into: str = INFLIGHT) -> list[str]:
    """Unpacks every archive in `into` into `runs`, leaving a run whose
    checkpoints are already there alone; returns the commands that continue
    the restored runs."""
    manifest = _read_manifest(into)
    commands = []
    for archive in sorted(glob.glob(os.path.join(into, "*" + _ARCHIVE))):
        run = os.path.basename(archive)[: -len(_ARCHIVE)]
        run_dir = os.path.join(runs, run)
        if os.path.isdir(os.path.join(run_dir, "checkpoints")):
            print(f"{run}: checkpoints already in {run_dir}, left as they are")
            continue
        os.makedirs(run_dir, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(run_dir, filter="data")
        command = manifest.get(run, {}).get("command")
        if command:
            with open(os.path.join(run_dir, COMMAND_FILE), "w") as f:
                f.write(command + "\n")
            commands.append(command)
        print(f"{run}: restored at {progress(os.path.join(run_dir, 'checkpoints'))}")
    return sorted(set(commands))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["save", "restore", "list"])
    p.add_argument("--runs", default=DEFAULT_OUT, help="the runs' folder (bench.run's out)")
    p.add_argument("--into", default=INFLIGHT, help="where the archives are kept")
    p.add_argument(
        "--max-mb",
        type=float,
        default=MAX_MB,
        help="save: the largest archive kept, in megabytes (a larger one keeps the previous)",
    )
    args = p.parse_args(argv)
    if args.action == "save":
        if not args.max_mb > 0:
            p.error(f"--max-mb: must be a positive number of megabytes; got {args.max_mb:g}")
        manifest = save(args.runs, args.into, args.max_mb)
        print(json.dumps(manifest, indent=2, sort_keys=True))
    elif args.action == "restore":
        for command in restore(args.runs, args.into):
            print("continue with:", command)
    else:
        print(json.dumps(_read_manifest(args.into), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
