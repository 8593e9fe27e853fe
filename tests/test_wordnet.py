"""The WordNet hierarchy above ImageNet's classes (kx_utils.data.wordnet), the tree of the adaptive attacker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kx_utils.data import wordnet as wn

# four synsets in data.noun's format: entity <- physical entity <- {cougar, an instance}; cougar also has a second
# hypernym, which the tree ignores (the first pointer wins)
DATA_NOUN = """  1 This software and database is being provided to you, the LICENSEE, by Princeton University
00001740 03 n 01 entity 0 001 ~ 00001930 n 0000 | that which is perceived
00001930 03 n 01 physical_entity 0 001 @ 00001740 n 0000 | an entity that has physical existence
02125311 05 n 02 cougar 0 puma 0 002 @ 00001930 n 0000 @ 00001740 n 0000 | large American feline
09999999 05 n 01 Somebody 0 001 @i 02125311 n 0000 | an instance
"""


def test_parse_hypernyms_by_hand():
    h = wn.parse_hypernyms(DATA_NOUN.splitlines())
    assert h == {"n00001740": [], "n00001930": ["n00001740"], "n02125311": ["n00001930", "n00001740"],
                 "n09999999": ["n02125311"]}
    assert wn.hypernym_path("n02125311", h) == ["n00001740", "n00001930", "n02125311"]
    assert wn.hypernym_path("n09999999", h)[-2:] == ["n02125311", "n09999999"]
    with pytest.raises(ValueError, match="not at entity"):
        wn.hypernym_path("n00001930", {"n00001930": ["n00000001"]})


def test_pool_parents_make_one_tree_with_the_classes_as_leaves():
    paths = {"a": ("r", "x", "a"), "b": ("r", "x", "b"), "c": ("r", "c")}
    parents = wn.pool_parents(["a", "b", "c"], paths)
    # leaves 0-2, then r (3, the root), x (4)
    assert parents == [4, 4, 3, -1, 3]
    assert wn.pool_parents(["a", None], paths) == [3, 2, -1, 2]  # a class with no image hangs from the root (2)
    with pytest.raises(ValueError, match=r"no WordNet path for pool class\(es\) \['zebra'\].*\"flat\""):
        wn.pool_parents(["a", "zebra"], paths)


def test_committed_hierarchy_covers_imagenet_and_rebuilds_from_its_source(tmp_path):
    paths = wn.imagenet_paths()
    assert len(paths) == 1000 and all(p[0] == wn.ROOT and p[-1] == w for w, p in paths.items())
    assert paths["n02125311"][-2:] == ("n02124623", "n02125311")  # cougar, under wildcat (data.noun's first '@')
    data = os.environ.get("KX_DATA")
    if data and (Path(data) / "tiny_imagenet" / "train").is_dir():
        tiny = sorted(p.name for p in (Path(data) / "tiny_imagenet" / "train").iterdir())
        parents = wn.pool_parents(tiny)
        assert parents.count(-1) == 1 and len(parents) > len(tiny)
    out = tmp_path / "h.csv"
    assert wn.write_hierarchy(_write(tmp_path, DATA_NOUN), ["n02125311"], out) == 1
    assert out.read_text() == "wnid,path\nn02125311,n00001740/n00001930/n02125311\n"


def _write(folder: Path, text: str) -> Path:
    path = folder / "data.noun"
    path.write_text(text)
    return path
