#!/usr/bin/env python3
"""fastText beside `sparseburn bench e2e`: a whole fastText process, measured from outside.

The process under test runs `fasttext.train_supervised` + `save_model` (+ `test`) on the
same train/test split as configs/debian_sections.toml, with matching settings: lr 1.0,
5 epochs, word bigrams, 2,000,000 buckets, dim 64, minCount 2, 2 threads. It is measured
the way sparseburn's bench e2e measures `sparseburn train`: wall time from spawn to exit,
bytes written to storage (/proc/<pid>/io write_bytes, read until the child exits and once
more before it is reaped), peak RSS (wait4's ru_maxrss) and the share of the machine's
CPU other processes used meanwhile.

fastText reads `__label__X text` lines and splits on whitespace; sparseburn lowercases and
splits on non-alphanumerics. So that both see the same tokens, the TSV files are first
converted once (lowercased alphanumeric runs, cached next to --out); that conversion is
not part of the measured process and is reported apart.

    python3 -m venv ~/.cache/sparseburn-ftvenv
    ~/.cache/sparseburn-ftvenv/bin/pip install fasttext-wheel
    ~/.cache/sparseburn-ftvenv/bin/python benches/fasttext_e2e.py \\
        data/debian_sections/train.tsv data/debian_sections/test.tsv --out /tmp/ft --json ft.json

The project does not depend on Python; this script is only for the comparison.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

TOKEN = re.compile(r"[^\W_]+")  # maximal runs of Unicode alphanumerics, like sparseburn's tokenizer


def convert(tsv, out):
    """`label<TAB>text` -> `__label__label tok tok ...` with sparseburn's tokens; cached."""
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(tsv):
        return 0.0
    t = time.perf_counter()
    tmp = out + ".tmp"
    with open(tsv, encoding="utf-8", errors="strict") as f, open(tmp, "w", encoding="utf-8") as g:
        for line in f:
            label, sep, text = line.rstrip("\n\r").partition("\t")
            label, text = label.strip(), text.strip()
            if not sep or not label or not text:
                continue  # sparseburn skips these lines too
            g.write(f"__label__{label} {' '.join(TOKEN.findall(text.lower()))}\n")
        g.flush()
        os.fsync(g.fileno())
    os.replace(tmp, out)
    return time.perf_counter() - t


def child(args):
    """The measured process: train, save, test; its own phase times on stdout as JSON."""
    t0 = time.perf_counter()
    import fasttext

    t1 = time.perf_counter()
    model = fasttext.train_supervised(
        input=args.train_ft, lr=args.lr, epoch=args.epoch, wordNgrams=args.word_ngrams, bucket=args.bucket,
        dim=args.dim, minCount=args.min_count, thread=args.threads, verbose=0,
    )
    t2 = time.perf_counter()
    model.save_model(args.model)
    t3 = time.perf_counter()
    n, p_at_1, _ = model.test(args.test_ft)
    t4 = time.perf_counter()
    json.dump({"import_s": t1 - t0, "train_s": t2 - t1, "save_s": t3 - t2, "test_s": t4 - t3,
               "test_examples": n, "accuracy": p_at_1, "model_bytes": os.path.getsize(args.model)}, sys.stdout)


def read_io(pid):
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(":") for line in f if ":" in line)
    return {k.strip(): int(v) for k, v in fields.items()}


def cpu_ticks():
    """(busy, total) clock ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:9]]
    idle = cpu[3] + cpu[4]
    return sum(cpu) - idle, sum(cpu)


def own_ticks():
    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def measure_once(args, train_ft, test_ft, model):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--train-ft", train_ft, "--test-ft", test_ft, "--model", model,
           "--lr", str(args.lr), "--epoch", str(args.epoch), "--word-ngrams", str(args.word_ngrams), "--bucket", str(args.bucket),
           "--dim", str(args.dim), "--min-count", str(args.min_count), "--threads", str(args.threads)]
    busy0, total0 = cpu_ticks()
    own0 = own_ticks()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    exited = {}

    def wait_unreaped():
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        exited["at"] = time.perf_counter()

    waiter = threading.Thread(target=wait_unreaped)
    waiter.start()
    # The child's stdout is one small JSON line: read it on a thread so the pipe never fills.
    out = {}
    reader = threading.Thread(target=lambda: out.setdefault("text", proc.stdout.read()))
    reader.start()
    io = {}
    while waiter.is_alive():
        try:
            io = read_io(proc.pid)
        except OSError:
            pass
        waiter.join(args.poll_ms / 1000)
    io = read_io(proc.pid)  # the zombie's final counters
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    wall = exited["at"] - start
    busy1, total1 = cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    child_ticks = (usage.ru_utime + usage.ru_stime) * hz
    others = (busy1 - busy0 - (own_ticks() - own0) - child_ticks) / max(total1 - total0, 1)
    if proc.returncode != 0:
        sys.exit(f"fastText child failed with exit status {proc.returncode}")
    inner = json.loads(out["text"])
    return {"wall_s": wall, "exit_code": proc.returncode, "user_s": usage.ru_utime, "system_s": usage.ru_stime,
            "peak_rss_bytes": usage.ru_maxrss * 1024, "write_bytes": io["write_bytes"], "wchar": io["wchar"],
            "other_processes_cpu": min(max(others, 0.0), 1.0), **inner}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train", nargs="?")
    ap.add_argument("test", nargs="?")
    ap.add_argument("--out", help="folder for the converted data and the model (on a disk, not tmpfs)")
    ap.add_argument("--json")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--poll-ms", type=float, default=20)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--epoch", type=int, default=5)
    ap.add_argument("--word-ngrams", type=int, default=2)
    ap.add_argument("--bucket", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--train-ft", help=argparse.SUPPRESS)
    ap.add_argument("--test-ft", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if not (args.train and args.test and args.out):
        ap.error("give TRAIN.tsv TEST.tsv and --out DIR")
    os.makedirs(args.out, exist_ok=True)
    train_ft = os.path.join(args.out, "train.ft.txt")
    test_ft = os.path.join(args.out, "test.ft.txt")
    convert_s = convert(args.train, train_ft) + convert(args.test, test_ft)
    runs = []
    for i in range(args.repeat):
        model = os.path.join(args.out, "model.bin")
        if os.path.exists(model):
            os.remove(model)
        r = measure_once(args, train_ft, test_ft, model)
        runs.append(r)
        print(f"fastText run {i + 1}/{args.repeat}: wall {r['wall_s']:.2f} s (import {r['import_s']:.2f}, train {r['train_s']:.2f}, "
              f"save {r['save_s']:.2f}, test {r['test_s']:.2f}), written {r['write_bytes'] / 1e9:.3f} GB, "
              f"peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB, accuracy {r['accuracy']:.4f}, "
              f"other processes {r['other_processes_cpu'] * 100:.0f}% CPU")
    median = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "write_bytes", "peak_rss_bytes", "other_processes_cpu", "accuracy")}
    report = {"tool": "fastText " + fasttext_version(), "settings": {k: getattr(args, k) for k in
              ("lr", "epoch", "word_ngrams", "bucket", "dim", "min_count", "threads")},
              "train": args.train, "test": args.test, "convert_s": convert_s, "runs": runs, "median": median}
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.json)
        print(f"wrote {args.json}", file=sys.stderr)


def fasttext_version():
    try:
        from importlib.metadata import version
        return version("fasttext-wheel")
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
