#!/usr/bin/env python3
"""Check a sparseburn logdir with TensorBoard's own event reader.

Usage: check_tensorboard.py LOGDIR [--scalar TAG ...]
                           [--hparams-sessions N --tensorboard BIN]

Every run under LOGDIR (a folder holding an events.out.tfevents.* file) must
have the scalar tags (default: train/loss), a graph whose nodes all have a
device, and an hparams session_start_info with at least one hparam.

With --hparams-sessions N, a real TensorBoard server (BIN) is started on
LOGDIR and its HParams plugin is asked for its session groups, as the
dashboard asks: there must be exactly N groups (one per run, none merged),
each with one session named like its run and its own value of every metric
(the run's last value of that scalar).
Exits 0 if all runs pass, 1 with one line per problem otherwise.
Needs `pip install tensorboard` (TensorFlow is not needed).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def list_session_groups(tensorboard, logdir, expected, timeout=120):
    """Starts TensorBoard on logdir; returns its session groups once it lists `expected` (or at timeout)."""
    port = free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [tensorboard, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    request = json.dumps({
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 1000,
        "includeMetrics": True,
    }).encode()
    groups, last_error, deadline = None, None, time.time() + timeout
    try:
        while time.time() < deadline:
            time.sleep(1)
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"check_tensorboard: tensorboard exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                url = f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups"
                # The plugin reads the request from a JSON body (a form content type leaves it empty).
                post = urllib.request.Request(url, data=request, method="POST", headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(post, timeout=30) as r:
                    groups = json.load(r).get("sessionGroups", [])
            except urllib.error.HTTPError as e:  # the server answered: a wrong request, not a slow start
                last_error = f"HTTP {e.code}: {e.read().decode(errors='replace')[:500]}"
                continue
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                last_error = str(e)
                continue
            # Loading is asynchronous: wait until every run's session and metrics are in.
            if len(groups) >= expected and all(g.get("metricValues") for g in groups):
                break
    finally:
        server.terminate()
        server.wait(timeout=30)
    if groups is None:
        raise SystemExit(f"check_tensorboard: the HParams plugin never answered: {last_error}")
    return groups


def check_sessions(groups, expected, runs, logdir):
    """Problems with the HParams plugin's session groups (empty when fine)."""
    problems = []
    if len(groups) != expected:
        problems.append(f"HParams lists {len(groups)} session groups, expected {expected} (one per run): {sorted(g['name'] for g in groups)}")
    run_names = {os.path.relpath(r, logdir).replace(os.sep, "/") for r in runs}
    for g in groups:
        sessions = g.get("sessions", [])
        if len(sessions) != 1:
            problems.append(f"group {g['name']!r} merges {len(sessions)} sessions: {[s['name'] for s in sessions]}")
            continue
        if sessions[0]["name"] not in run_names:
            problems.append(f"group {g['name']!r}: session {sessions[0]['name']!r} is not a run under the logdir")
        if not g.get("metricValues"):
            problems.append(f"group {g['name']!r} has no metric values")
    # Each run reports its own numbers: the accuracy shown is that run's last eval/accuracy.
    for g in groups:
        for s in g.get("sessions", [])[:1]:
            ea = EventAccumulator(os.path.join(logdir, s["name"]), size_guidance={"scalars": 0})
            ea.Reload()
            for mv in s.get("metricValues", []):
                tag = mv["name"]["tag"]
                if tag in ea.Tags().get("scalars", []):
                    last = ea.Scalars(tag)[-1].value
                    if abs(mv.get("value", float("nan")) - last) > 1e-6:
                        problems.append(f"session {s['name']!r}: {tag} shown as {mv.get('value')}, its run's last value is {last}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("--scalar", action="append", help="required scalar tag (repeatable; default train/loss)")
    parser.add_argument("--hparams-sessions", type=int, help="expected HParams session groups, from a real TensorBoard server")
    parser.add_argument("--tensorboard", default="tensorboard", help="the tensorboard executable (with --hparams-sessions)")
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
    if args.hparams_sessions is not None:
        groups = list_session_groups(args.tensorboard, args.logdir, args.hparams_sessions)
        problems = check_sessions(groups, args.hparams_sessions, runs, args.logdir)
        for problem in problems:
            print(f"check_tensorboard: FAIL hparams: {problem}", file=sys.stderr)
        if not problems:
            print(f"check_tensorboard: ok hparams: {len(groups)} session groups, one run each: {sorted(g['name'] for g in groups)}")
        failed += len(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
