#!/usr/bin/env python3
"""Check a sparseburn logdir with TensorBoard's own event reader.

Usage: check_tensorboard.py LOGDIR [--scalar TAG ...]

Every run under LOGDIR (a folder holding an events.out.tfevents.* file) must
have the scalar tags (default: train/loss), a graph whose nodes all have a
device, and an hparams session_start_info with at least one hparam.
Exits 0 if all runs pass, 1 with one line per problem otherwise.
Needs `pip install tensorboard` (TensorFlow is not needed).
"""

import argparse
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

SESSION_START = "_hparams_/session_start_info"


def find_runs(logdir):
    return sorted(
        root
        for root, _, files in os.walk(logdir)
        if any(f.startswith("events.out.tfevents.") for f in files)
    )


def check_run(path, scalar_tags):
    """Returns a list of problems (empty when the run is fine)."""
    problems = []
    ea = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()

    for tag in scalar_tags:
        if tag not in tags.get("scalars", []):
            problems.append(f"no scalar {tag!r} (scalars: {sorted(tags.get('scalars', []))})")
        elif not ea.Scalars(tag):
            problems.append(f"scalar {tag!r} has no points")

    if not tags.get("graph"):
        problems.append("no graph")
    else:
        nodes = ea.Graph().node
        if not nodes:
            problems.append("graph has no nodes")
        no_device = [n.name for n in nodes if not n.device]
        if no_device:
            problems.append(f"graph nodes without a device: {no_device[:5]}")

    try:
        content = ea.PluginTagToContent("hparams")
    except KeyError:  # no summary of that plugin at all
        content = {}
    if SESSION_START not in content:
        problems.append(f"no hparams {SESSION_START} (hparams tags: {sorted(content)})")
    else:
        data = plugin_data_pb2.HParamsPluginData.FromString(content[SESSION_START])
        if data.version != 0 or not data.HasField("session_start_info"):
            problems.append(f"hparams {SESSION_START} is not a version 0 session_start_info: {data}")
        elif not data.session_start_info.hparams:
            problems.append("hparams session_start_info lists no hparams")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("--scalar", action="append", help="required scalar tag (repeatable; default train/loss)")
    args = parser.parse_args()
    scalar_tags = args.scalar or ["train/loss"]

    if not os.path.isdir(args.logdir):
        print(f"check_tensorboard: {args.logdir} is not a directory", file=sys.stderr)
        return 1
    runs = find_runs(args.logdir)
    if not runs:
        print(f"check_tensorboard: no event files under {args.logdir}", file=sys.stderr)
        return 1

    failed = 0
    for run in runs:
        name = os.path.relpath(run, args.logdir)
        problems = check_run(run, scalar_tags)
        if problems:
            failed += 1
            for problem in problems:
                print(f"check_tensorboard: FAIL {name}: {problem}", file=sys.stderr)
        else:
            print(f"check_tensorboard: ok {name}")
    print(f"check_tensorboard: {len(runs) - failed} of {len(runs)} runs ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
