"""Hand-audited lists of victim classes that ImageNet-1k also has (paper §3.2.1).

Rule.  A victim class overlaps ImageNet-1k when one of the 1000 classes denotes the same
category.  Animals and plants match at species level: the ImageNet class is the same species,
or the same common name on both sides ("goose", "hummingbird", "scorpion"), or a genus-level
name that in practice denotes the species ("junco" = Dark-eyed Junco, "panda" = giant panda,
"iguana" = green iguana); the note says so.  Objects match at ImageNet's object-kind level:
``same`` = the same kind ("laptop" = laptop, "airplanes" = airliner because Caltech's airplanes
are side views of airliners); ``subtype`` = a sub-kind that is the typical member of the
ImageNet class (fighter-jet -> warplane, tennis-racket -> racket); ``instance`` = a named model,
product or landmark of the kind (ak47 -> assault rifle, golden-gate-bridge -> suspension bridge).

Not an overlap, whichever side is broader:
* macro classes, a victim class that spans several ImageNet classes or is broader than the only
  one (CIFAR10 bird/dog/cat/airplane/ship..., Caltech dog, bear, butterfly, crab, elephant, car-side,
  camel vs Arabian camel, horse vs sorrel, hamburger vs cheeseburger, watch vs digital watch,
  eyeglasses vs sunglasses, spoon vs wooden spoon, necktie vs Windsor tie, lobster);
* a species under a generic ImageNet class (CUB Black-footed Albatross vs albatross, Blue Jay vs
  jay, Anna Hummingbird vs hummingbird, Mallard vs drake, Caltech house-fly vs fly) -- this keeps
  CUB at about the paper's 1% (we list 4 of 200);
* a different species or kind with a similar name (American Goldfinch vs the European goldfinch,
  Purple Finch vs house finch, kangaroo vs wallaby, greyhound vs Italian greyhound, hedgehog vs
  "porcupine, hedgehog", Motorbikes vs moped/motor scooter, kayak vs canoe, ketch vs yawl,
  sneaker vs running shoe, beer-mug vs beer glass, flashlight vs torch, ceiling fan vs electric fan);
* parts and containers (car-tire vs car wheel, minaret vs mosque, telephone-box vs pay-phone);
* a sub-kind that is not the typical member of a broad ImageNet class (tambourine vs drum, any
  traffic sign vs "street sign": hence GTSRB, like Caltech's stop_sign, has no overlap).

Files: ``overlap_lists/<dataset folder>.csv`` with columns class, imagenet_wnid, imagenet_name
(as in the ImageNet sample's classes.csv), relation, note.  ``class`` is the dataset's class
folder name, exactly.  A dataset with no overlap has a header-only file.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

LIST_DIR = Path(__file__).resolve().parent / "overlap_lists"
COLUMNS = ("class", "imagenet_wnid", "imagenet_name", "relation", "note")
RELATIONS = ("same", "subtype", "instance")


class OverlapListNotFoundError(FileNotFoundError):
    """No audited overlap list ships for a dataset folder."""


@dataclass(frozen=True)
class OverlapEntry:
    class_name: str  # the dataset's class folder name
    wnid: str  # ImageNet-1k WordNet id, e.g. n01531178
    imagenet_name: str
    relation: str  # one of RELATIONS
    note: str = ""


def list_path(dataset_folder: str) -> Path:
    return LIST_DIR / f"{dataset_folder}.csv"


def available_lists() -> list[str]:
    return sorted(p.stem for p in LIST_DIR.glob("*.csv"))


def overlap_list(dataset_folder: str) -> list[OverlapEntry]:
    """The audited entries for ``dataset_folder`` (e.g. "caltech101"), in file order."""
    path = list_path(dataset_folder)
    if not path.is_file():
        raise OverlapListNotFoundError(
            f"no ImageNet-overlap list for dataset {dataset_folder!r}: {path} does not exist "
            f"(lists ship for: {', '.join(available_lists()) or 'none'}). Write one by hand review: "
            f"a CSV with header {','.join(COLUMNS)} and one row per class that ImageNet-1k also has, "
            f"following the rule in {Path(__file__).name}'s docstring; a header-only file means no overlap.")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: header must be {','.join(COLUMNS)}, got {reader.fieldnames}")
        entries = [OverlapEntry(r["class"], r["imagenet_wnid"], r["imagenet_name"], r["relation"],
                                r["note"] or "") for r in reader]
    bad = [e.class_name for e in entries if e.relation not in RELATIONS]
    if bad:
        raise ValueError(f"{path}: relation must be one of {RELATIONS}; rows {bad} are not")
    dupes = sorted({e.class_name for e in entries if sum(x.class_name == e.class_name for x in entries) > 1})
    if dupes:
        raise ValueError(f"{path}: classes listed twice: {dupes}")
    return entries


def overlapping_class_indices(dataset_folder: str, class_names: Sequence[str],
                              relations: Collection[str] | None = None) -> list[int]:
    """Sorted indices into ``class_names`` (the dataset's class folders in label order) of the
    classes that the audited list marks as overlapping ImageNet-1k.

    ``relations`` keeps only entries of those relations (default: all, i.e. the rule above).
    Raises ``ValueError`` when the list names a class that ``class_names`` does not contain, so a
    misspelt or renamed folder is an error rather than a silent miss.
    """
    entries = overlap_list(dataset_folder)
    if relations is not None:
        unknown_rel = set(relations) - set(RELATIONS)
        if unknown_rel:
            raise ValueError(f"unknown relation(s) {sorted(unknown_rel)}; known: {RELATIONS}")
    index = {name: i for i, name in enumerate(class_names)}
    missing = [e.class_name for e in entries if e.class_name not in index]
    if missing:
        raise ValueError(
            f"the ImageNet-overlap list {list_path(dataset_folder)} names class(es) {missing} that the "
            f"dataset does not have ({len(class_names)} classes given, e.g. {list(class_names[:3])}): "
            f"a folder is misspelt or renamed; fix the dataset folder or the list")
    return sorted(index[e.class_name] for e in entries
                  if relations is None or e.relation in relations)
