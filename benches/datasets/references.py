#!/usr/bin/env python3
"""Reference accuracies on a `label<TAB>text` train/test pair: fastText and a
linear SVM, for the accuracy table of BENCHMARKS.md ("Model options").

Usage:
  references.py fasttext DATA_DIR [--lr 1.0] [--minn N --maxn N] [--seeds 1 2 3]   (python with `fasttext`)
  references.py svm DATA_DIR                                             (python with scikit-learn)

fastText: `train_supervised` with the settings of configs/debian_sections.toml
(lr 1.0 as benches/fasttext_e2e.py unless --lr, 5 epochs, word bigrams, 2,000,000 buckets,
dim 64, minCount 2, 2 threads), on lowercased text (fastText splits on
whitespace itself), the training lines shuffled with the run's seed (fastText
reads its file in order, as its tutorial's `shuf` assumes). Several threads make fastText nondeterministic: each seed
is one run. SVM: scikit-learn's LinearSVC (C = 1) on TF-IDF of lowercased
word uni- and bigrams (sublinear tf, min_df 2); deterministic, one run.
Prints one JSON line per run: {"reference", "data", "seed", "accuracy"}.
"""

import argparse
import json
import os
import random
import tempfile


def read(path):
    labels, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            label, _, text = line.rstrip("\n").partition("\t")
            if label and text.strip():
                labels.append(label)
                texts.append(text.lower())
    return labels, texts


def fasttext_runs(args, train, test):
    import fasttext

    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            # fastText reads its file in order (each thread a slice) with a
            # decaying lr: a file in class order (WordNet's is) must be shuffled first.
            pairs = list(zip(*train))
            random.Random(seed).shuffle(pairs)
            path = os.path.join(tmp, f"train-{seed}.txt")
            with open(path, "w", encoding="utf-8") as f:
                for label, text in pairs:
                    f.write(f"__label__{label} {' '.join(text.split())}\n")
            model = fasttext.train_supervised(
                path, lr=args.lr, epoch=5, wordNgrams=2, bucket=2_000_000, dim=64, minCount=2,
                minn=args.minn, maxn=args.maxn, thread=2, seed=seed, verbose=0,
            )
            predicted = model.predict([" ".join(t.split()) for t in test[1]], k=1)[0]
            correct = sum(p[0] == "__label__" + y for p, y in zip(predicted, test[0]))
            name = f"fastText lr {args.lr:g}" + (f" minn {args.minn} maxn {args.maxn}" if args.maxn else "")
            yield {"reference": name, "data": args.data, "seed": seed, "accuracy": correct / len(test[0])}


def svm_run(args, train, test):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vec.fit_transform(train[1])
    clf = LinearSVC(C=1.0).fit(x, train[0])
    predicted = clf.predict(vec.transform(test[1]))
    correct = sum(p == y for p, y in zip(predicted, test[0]))
    yield {"reference": "linear SVM (TF-IDF 1-2 grams)", "data": args.data, "seed": None, "accuracy": correct / len(test[0])}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["fasttext", "svm"])
    p.add_argument("data")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--minn", type=int, default=0)
    p.add_argument("--maxn", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args()
    train = read(os.path.join(args.data, "train.tsv"))
    test = read(os.path.join(args.data, "test.tsv"))
    runs = fasttext_runs if args.kind == "fasttext" else svm_run
    for r in runs(args, train, test):
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
