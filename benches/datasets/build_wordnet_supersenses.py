#!/usr/bin/env python3
"""Builds the WordNet supersense dataset: every WordNet 3.0 synset's lemmas and
gloss, labelled by its lexicographer file ("supersense", e.g. noun.animal,
verb.motion, adj.pert; 45 classes).

Source: Debian's `wordnet-base` package (Princeton WordNet 3.0), fetched with
apt's ordinary client, so it builds from Debian's registry alone. Python
standard library only; needs `apt-get` and `dpkg-deb`.

Rebuild:
    python3 benches/datasets/build_wordnet_supersenses.py --out data/wordnet_supersenses
    # with apt lists in a private state dir (as data/apt for Debian sections):
    python3 benches/datasets/build_wordnet_supersenses.py --lists data/apt/lists --out data/wordnet_supersenses
    # or from a .deb already downloaded:
    python3 benches/datasets/build_wordnet_supersenses.py --deb wordnet-base_3.0-37_all.deb --out ...

What it writes (`label<TAB>text`, UTF-8, one synset a line, file order kept):
  text  = the synset's lemmas (underscores as spaces, adjective markers such as
          "(p)" dropped) joined by ", ", then " : ", then the gloss.
  label = the lexicographer file name for the synset's lex_filenum, read from
          the package's own lexnames(5WN) man page.
Exact duplicate texts are dropped (first kept).

Split, grouped by head word: a synset goes to test when FNV-1a 64 of its first
lemma (lowercased, spaces as written) % 100 < 20. All senses of one head word
("bank" the slope, "bank" the institution, "bank" the verb ...) land on one side,
so a test synset never shares its head word with a training synset; the senses
of a word share wording in their glosses, and a random split would let a model
score by remembering the word instead of reading the definition.
"""

import argparse
import glob
import gzip
import os
import re
import subprocess
import sys
import tempfile

POS_FILES = ["data.noun", "data.verb", "data.adj", "data.adv"]


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def lexnames(root):
    """lex_filenum -> name, from the package's lexnames(5WN) man page."""
    path = os.path.join(root, "usr/share/man/man5/lexnames.5WN.gz")
    names = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^(\d\d)\s+(\w+\.\w+)\s", line)
            if m:
                names[int(m.group(1))] = m.group(2)
    if len(names) != 45:
        raise SystemExit(f"{path}: expected 45 lexicographer files, found {len(names)}")
    return names


def parse_synset(line):
    """(lex_filenum, [lemmas], gloss) of one data.* line, or None for the licence header."""
    if line.startswith("  "):
        return None
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    lex_filenum = int(fields[1])
    w_cnt = int(fields[3], 16)
    lemmas = []
    for i in range(w_cnt):
        word = fields[4 + 2 * i]
        word = re.sub(r"\((a|p|ip)\)$", "", word)
        lemmas.append(word.replace("_", " "))
    return lex_filenum, lemmas, " ".join(gloss.split())


def extract(args, tmp):
    deb = args.deb
    if deb is None:
        cmd = ["apt-get", "download"]
        if args.lists:
            lists = os.path.abspath(args.lists)
            cmd += ["-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={os.path.dirname(lists)}/cache"]
        cmd.append("wordnet-base")
        subprocess.run(cmd, cwd=tmp, check=True)
        debs = glob.glob(os.path.join(tmp, "wordnet-base_*.deb"))
        if len(debs) != 1:
            raise SystemExit(f"apt-get download left {debs}")
        deb = debs[0]
    root = os.path.join(tmp, "root")
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    print(f"source: {os.path.basename(deb)}", file=sys.stderr)
    return root


def write_atomic(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--lists", help="apt lists dir (Dir::State::Lists) to download with")
    p.add_argument("--deb", help="use this wordnet-base .deb instead of downloading")
    p.add_argument("--test-percent", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = extract(args, tmp)
        names = lexnames(root)
        seen, train, test = set(), [], []
        synsets = dupes = 0
        for name in POS_FILES:
            with open(os.path.join(root, "usr/share/wordnet", name), encoding="utf-8") as f:
                for line in f:
                    parsed = parse_synset(line)
                    if parsed is None:
                        continue
                    synsets += 1
                    lex, lemmas, gloss = parsed
                    text = ", ".join(lemmas) + " : " + gloss
                    if text in seen:
                        dupes += 1
                        continue
                    seen.add(text)
                    side = test if fnv1a64(lemmas[0].lower()) % 100 < args.test_percent else train
                    side.append(f"{names[lex]}\t{text}\n")
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, "train.tsv"), train)
    write_atomic(os.path.join(args.out, "test.tsv"), test)
    labels = {l.split("\t", 1)[0] for l in train + test}
    print(f"synsets {synsets}, duplicate texts dropped {dupes}, train {len(train)}, test {len(test)}, labels {len(labels)}", file=sys.stderr)


if __name__ == "__main__":
    main()
