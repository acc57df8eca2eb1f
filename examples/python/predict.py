#!/usr/bin/env python3
"""Reference reader of a sparseburn model bundle: numpy + safetensors only.

Usage: predict.py MODEL_DIR [--top-k K] < texts.txt

Reads one text per line on stdin (or a JSON line {"text": ..., "id": ...}) and
writes one JSON line per input, {"labels": [...], "scores": [...]}, highest
probability first, like `sparseburn predict --model MODEL_DIR`. Everything it
does is spelled out in the bundle's manifest.json (its "definition" section):

  tokens   tokenizer.split = "alnum": maximal runs of Unicode alphanumeric
           characters (letters: category L*, numbers: Nd, Nl, No), the rest
           separates; "whitespace" (fastText's rule): maximal runs of characters
           other than ' ', \t, \n, \r, \v, \f, \0. Each token lowercased
           (tokenizer.lowercase); the first tokenizer.max_tokens kept (0 = all)
  rows     a token on line i of vocab.txt is row i; any other token is row
           V + fnv1a64(token) % buckets; for n = 2..ngrams every window of n
           tokens is row V + h % buckets with h = n, h = h * 116049371 + fnv(t)
           (wrapping u64); then, when vocab.maxn > 0, each token's character
           n-grams (fastText's subwords: every run of vocab.minn..vocab.maxn
           characters of "<" + token + ">" except a lone "<" or ">") are rows
           V + fnv(ngram) % buckets; V = vocab.size. No rows for OOV/n-grams if
           buckets = 0.
  pooling  the rows summed in f32 in that order (words, 2-grams, ..., char n-grams), times
           1/count (mean), 1 (sum) or 1/sqrt(count) (sqrtn); no rows: zeros
  head     y = x @ W + b per layer, W stored [in, out]; ReLU between layers
  output   softmax over the logits; logit i is labels[i]

Python's character classes differ from Rust's `char::is_alphanumeric` only
for "Other_Alphabetic" marks (combining vowel signs of Indic scripts, circled
letters): text with those may tokenize differently.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import unicodedata

import numpy as np
from safetensors import safe_open

SUPPORTED_FORMAT = 1
MASK = (1 << 64) - 1
FASTTEXT_SEPARATORS = " \t\n\r\x0b\x0c\x00"


def load_table(path):
    """The bundle's table as float32, whatever its stored dtype (F32, F16, or
    BF16, which numpy lacks: its 16 bits are the high half of a float32)."""
    file = os.path.join(path, "model.safetensors")
    with open(file, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        info = json.loads(f.read(n))["table"]
        if info["dtype"] != "BF16":
            with safe_open(file, framework="numpy") as st:
                return st.get_tensor("table").astype(np.float32)
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        bits = np.frombuffer(f.read(end - start), dtype="<u2")
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def is_alnum(ch):
    cat = unicodedata.category(ch)
    return cat[0] == "L" or cat in ("Nd", "Nl", "No")


class Bundle:
    def __init__(self, path, verify=True):
        with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
            self.manifest = m = json.load(f)
        if m["format_version"] > SUPPORTED_FORMAT:
            raise SystemExit(f"{path}: bundle format {m['format_version']} is newer than this reader ({SUPPORTED_FORMAT})")
        if verify:
            for name, info in m["files"].items():
                with open(os.path.join(path, name), "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                if digest != info["sha256"]:
                    raise SystemExit(f"{path}/{name}: checksum mismatch (corrupt or modified)")
        d = m.get("definition", {})
        self.split = m["tokenizer"].get("split", "alnum")
        splits = {"alnum": "alphanumeric_runs", "whitespace": "fasttext_whitespace"}
        if self.split not in splits:
            raise SystemExit(f"manifest tokenizer.split = {self.split!r}: this reader knows only {sorted(splits)}")
        self.check(d, ["tokens", "split"], splits[self.split])
        self.check(d, ["hash", "function"], "fnv1a_64_utf8")
        self.check(d, ["head", "weight_layout"], "[in, out]")
        self.check(d, ["head", "activation"], "relu")
        h = d.get("hash", {})
        self.offset = h.get("offset_basis", 0xCBF29CE484222325)
        self.prime = h.get("prime", 0x100000001B3)
        self.mult = h.get("ngram_multiplier", 116049371)

        self.labels = m["labels"]
        self.lowercase = m["tokenizer"]["lowercase"]
        self.max_tokens = m["tokenizer"]["max_tokens"]
        self.buckets = m["vocab"]["buckets"]
        self.ngrams = max(1, m["vocab"]["ngrams"])
        self.minn = m["vocab"].get("minn", 0)
        self.maxn = m["vocab"].get("maxn", 0)
        self.pooling = m["model"]["pooling"]
        with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
            words = [line.rstrip("\n").rsplit("\t", 1)[0] for line in f]
        if len(words) != m["vocab"]["size"]:
            raise SystemExit(f"{path}/vocab.txt: {len(words)} words, the manifest says {m['vocab']['size']}")
        self.vocab = {w: i for i, w in enumerate(words)}
        self.table = load_table(path)
        with safe_open(os.path.join(path, "model.safetensors"), framework="numpy") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys() if k != "table"}
        if self.table.shape != (m["model"]["rows"], m["model"]["dim"]):
            raise SystemExit(f"{path}: table is {self.table.shape}, the manifest says {m['model']['rows']}×{m['model']['dim']}")
        self.layers = [(tensors[f"head.{i}.weight"], tensors[f"head.{i}.bias"]) for i in range(len(m["model"]["head"]))]

    @staticmethod
    def check(definition, keys, expected):
        value = definition
        for k in keys:
            value = value.get(k, {}) if isinstance(value, dict) else {}
        if value != {} and value != expected:
            raise SystemExit(f"manifest definition {'.'.join(keys)} = {value!r}: this reader knows only {expected!r}")

    def fnv(self, token):
        h = self.offset
        for b in token.encode("utf-8"):
            h = ((h ^ b) * self.prime) & MASK
        return h

    def tokens(self, text):
        out, cur = [], []
        keep = is_alnum if self.split == "alnum" else (lambda ch: ch not in FASTTEXT_SEPARATORS)
        for ch in text:
            if keep(ch):
                cur.append(ch)
            elif cur:
                out.append("".join(cur))
                cur = []
        if cur:
            out.append("".join(cur))
        if self.max_tokens:
            out = out[: self.max_tokens]
        return [t.lower() for t in out] if self.lowercase else out

    def rows(self, text):
        tokens = self.tokens(text)
        v = len(self.vocab)
        ids = []
        hashes = [self.fnv(t) for t in tokens] if self.buckets else []
        for i, t in enumerate(tokens):
            if t in self.vocab:
                ids.append(self.vocab[t])
            elif self.buckets:
                ids.append(v + hashes[i] % self.buckets)
        if self.buckets:
            for n in range(2, self.ngrams + 1):
                for start in range(len(hashes) - n + 1):
                    h = n
                    for t in hashes[start : start + n]:
                        h = (h * self.mult + t) & MASK
                    ids.append(v + h % self.buckets)
            if self.maxn > 0:
                for t in tokens:
                    ids.extend(v + self.fnv(g) % self.buckets for g in self.char_ngrams(t))
        return ids

    def char_ngrams(self, token):
        """fastText's subwords of a token: runs of minn..maxn characters of <token>."""
        w = "<" + token + ">"
        out = []
        for start in range(len(w)):
            for n in range(max(1, self.minn), min(self.maxn, len(w) - start) + 1):
                if n == 1 and (start == 0 or start + 1 == len(w)):
                    continue
                out.append(w[start : start + n])
        return out

    def pool(self, ids):
        acc = np.zeros(self.table.shape[1], dtype=np.float32)
        for i in ids:
            acc += self.table[i]
        n = len(ids)
        if n == 0:
            return acc
        scale = {"sum": np.float32(1.0), "mean": np.float32(1.0) / np.float32(n), "sqrtn": np.float32(1.0) / np.sqrt(np.float32(n))}[self.pooling]
        return acc * scale

    def probabilities(self, text):
        x = self.pool(self.rows(text))
        for k, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if k + 1 < len(self.layers):
                x = np.maximum(x, 0)
        z = x.astype(np.float64)
        z = z - z.max()
        return np.exp(z) / np.exp(z).sum()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--top-k", type=int, default=3, help="labels per line (0 = all)")
    parser.add_argument("--no-verify", action="store_true", help="skip the SHA-256 checks")
    args = parser.parse_args()
    bundle = Bundle(args.model, verify=not args.no_verify)
    for n, line in enumerate(sys.stdin, 1):
        line = line.rstrip("\n")
        reply = {}
        text = line
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
                text = obj["text"]
                if "id" in obj:
                    reply["id"] = obj["id"]
            except (ValueError, KeyError, TypeError) as e:
                print(json.dumps({"error": f"line {n}: {e}"}), flush=True)
                continue
        p = bundle.probabilities(text)
        order = sorted(range(len(p)), key=lambda i: (-p[i], i))
        k = len(order) if args.top_k == 0 else min(args.top_k, len(order))
        reply["labels"] = [bundle.labels[i] for i in order[:k]]
        reply["scores"] = [float(p[i]) for i in order[:k]]
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    sys.exit(main())
