"""The image sets of Section 4 for one victim, and the split that keeps judged queries unseen.

In-distribution: the victim's train and test splits.  Out-of-distribution: the attacker's ImageNet
(train and test splits) and OpenImages (test).  Three splits are made here, all seeded:

- **defender / attacker-only ImageNet.**  A fixed share (``detector_ood_share``) of the ImageNet
  *train* split is the defender's: the detector trains on it and the baselines' fair tuning holds out
  ``baseline_tuning_size`` of it.  The rest is never shown to a detector, so the Knockoff queries that
  the filter and notebook 06 are judged on can be taken from it (:func:`unseen_mask`).
- **published-protocol validation samples.**  Lee et al.'s and Liang et al.'s code fit ODIN's and
  Mahalanobis's settings on a sample of the *test* distributions (in and out).  That sample
  (``published_validation_fraction`` of each test set) is set aside here, and every Table 4 number,
  ours included, is measured on the rest, so all columns see the same images.
- **fair in-distribution tuning images.**  ``baseline_tuning_size`` images of the victim's training
  split on which the Mahalanobis Gaussians are *not* fitted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..config.schema import Profile
from ..config.seeds import stream_seed
from ..core.seeded import seeded_permutation, seeded_split
from ..data.catalog import dataset_info
from ..data.datasets import ImageSet, class_folders
from ..data.overlap import overlapping_class_indices
from ..runtime.artifacts import ArtifactStore, settings_key
from ..runtime.memo import Memo
from .attack import attacker_pool, default_pool_split
from .victims import data_content, load_dataset_split, victim_data, victim_spec


def split_off(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """``(sample, rest)``: a seeded ``fraction`` of ``images`` (at least one) and the others."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"a validation fraction must lie in (0, 1), got {fraction}")
    sample, rest = seeded_split(len(images), max(1, round(fraction * len(images))), seed)
    return images.subset(sample), images.subset(rest)


def dataset_folder(profile: Profile, dataset: str) -> str:
    """The folder name whose classes a dataset's overlap list names (the stand-in's in mini/smoke)."""
    info = dataset_info(dataset)
    return info.standin if profile.standins else info.folder


@dataclass
class DetectionData:
    """The sets of Section 4.2.1 for one victim, at the detector's input size."""

    victim_key: str
    image_size: int
    in_train: ImageSet  # the victim's whole training split (the detectors train on it)
    in_test: ImageSet  # the victim's test split minus the published-protocol validation sample
    ood_train: ImageSet  # the defender's ImageNet training images (minus the tuning hold-out)
    ood_tune: ImageSet  # ImageNet train images held out for the fair tuning of the baselines
    ood_test: ImageSet  # ImageNet test split minus its validation sample
    openimages_test: ImageSet  # minus its validation sample
    validation: dict  # published protocol: "in", "imagenet", "openimages" -> ImageSet
    in_tune: ImageSet  # fair tuning: victim training images the Gaussians are not fitted on
    in_fit: ImageSet  # victim training images the Gaussians are fitted on
    defender_files: frozenset  # every ImageNet file a detector or the fair tuning may see
    overlap: list[int]  # the victim's classes that overlap ImageNet (audited list)
    class_folders: list[str]  # the victim's class folder names, in label order
    settings: dict = field(repr=False, default_factory=dict)

    @property
    def overlap_names(self) -> list[str]:
        return [self.in_train.classes[c] for c in self.overlap]

    def kept(self, images: ImageSet) -> ImageSet:
        """``images`` without the classes that overlap ImageNet (the starred setting)."""
        return images.without_classes(self.overlap)

    def kept_mask(self, images: ImageSet) -> torch.Tensor:
        return ~torch.isin(images.labels, torch.tensor(self.overlap, dtype=torch.long))


# a few sets of Section 4 kept in memory between calls of one session: listing the folders, checking
# their files and cutting 12,000 images into subsets per call adds up
_SETS: Memo = Memo("Section 4 sets", max_entries=6)


def _loading(profile: Profile, store: ArtifactStore, size: int, sets: str) -> dict:
    """What every set of this module depends on: how :func:`~kx_utils.experiments.victims.load_dataset_split`
    reads a split (the profile's data, its crop, the cache of decoded splits) at ``size`` px."""
    return {"sets": sets, "store": str(store.root), "size": size, "standins": profile.standins,
            "data_root": str(profile.data_root or os.environ.get("KX_DATA") or ""),  # datasets.data_root's order
            "center_crop": profile.center_crop}


def memoized(key: dict, compute: Callable[[], object]):
    """``compute()``'s sets, kept in :data:`_SETS` under ``key`` (what they depend on, not the whole profile)."""
    return _SETS.get(settings_key(key), compute)


def defender_share(profile: Profile, imagenet_train: ImageSet) -> tuple[torch.Tensor, int]:
    """The seeded order of the ImageNet train split and how many of its first images are the defender's."""
    if not 0.0 < profile.detector_ood_share <= 1.0:
        raise ValueError(f"detector_ood_share must lie in (0, 1], got {profile.detector_ood_share}")
    order = seeded_permutation(len(imagenet_train), stream_seed(profile.seed, "defender_share"))
    return order, round(profile.detector_ood_share * len(imagenet_train))


def _ood_sets(profile: Profile, size: int, store: ArtifactStore) -> dict:
    imagenet_train = load_dataset_split(profile, "imagenet", "train", size, store=store)
    order, n_defender = defender_share(profile, imagenet_train)
    defender = order[:n_defender]
    n_tune = min(profile.baseline_tuning_size, len(defender) // 2)
    rest = defender[n_tune:]
    if profile.detector_ood_train is not None:
        rest = rest[:profile.detector_ood_train]
    ood_tune = imagenet_train.subset(torch.sort(defender[:n_tune]).values)
    ood_train = imagenet_train.subset(torch.sort(rest).values)
    fraction = profile.published_validation_fraction
    ood_test = load_dataset_split(profile, "imagenet", "test", size, store=store).capped(
        profile.detector_ood_test, profile.seed)
    openimages = load_dataset_split(profile, "openimages", "test", size, store=store).capped(
        profile.openimages_test, profile.seed)
    imagenet_val, ood_test = split_off(ood_test, fraction, stream_seed(profile.seed, "validation_imagenet"))
    openimages_val, openimages = split_off(openimages, fraction, stream_seed(profile.seed, "validation_openimages"))
    return {"ood_train": ood_train, "ood_tune": ood_tune, "ood_test": ood_test, "openimages_test": openimages,
            "imagenet_val": imagenet_val, "openimages_val": openimages_val,
            "defender_files": frozenset(imagenet_train.files[i] for i in defender.tolist())}


def detection_data(profile: Profile, victim_key: str, store: ArtifactStore | None = None) -> DetectionData:
    """The Section 4 sets of one pretrained victim, capped and split as the profile says."""
    store = store or ArtifactStore(profile.cache_root)
    spec = victim_spec(victim_key)
    if not spec.pretrained:
        raise ValueError(f"Section 4 detects queries to the pretrained victims; {victim_key} is trained from "
                         "scratch at another input size. Use one of caltech, cubs, diabetic5, gtsrb, cifar10")
    size = profile.image_size[spec.dataset]
    ood_key = {**_loading(profile, store, size, "ood"), "seed": profile.seed,
               "ood_share": profile.detector_ood_share, "tuning": profile.baseline_tuning_size,
               "ood_train": profile.detector_ood_train, "ood_test": profile.detector_ood_test,
               "openimages_test": profile.openimages_test, "validation": profile.published_validation_fraction}
    ood = memoized(ood_key, lambda: _ood_sets(profile, size, store))
    in_key = {**_loading(profile, store, size, victim_key), "seed": profile.seed,
              "train_per_class": profile.train_per_class, "test_per_class": profile.test_per_class}
    in_train, in_test = memoized(in_key, lambda: victim_data(profile, victim_key, store))
    in_val, in_test = split_off(in_test, profile.published_validation_fraction,
                                stream_seed(profile.seed, "validation_in"))
    n_tune = min(profile.baseline_tuning_size, len(in_train) // 2)
    tune, fit = seeded_split(len(in_train), n_tune, stream_seed(profile.seed, "baseline_tuning"))
    in_tune, in_fit = in_train.subset(tune), in_train.subset(fit)
    folders = class_folders(spec.dataset, "train", standins=profile.standins, root=profile.data_root)
    if len(folders) != in_train.num_classes:
        raise ValueError(f"{spec.dataset}: {len(folders)} class folders but {in_train.num_classes} classes loaded")
    overlap = overlapping_class_indices(dataset_folder(profile, spec.dataset), folders)
    settings = {"victim": victim_key, "dataset": spec.dataset, "standins": profile.standins, "size": size,
                "center_crop": profile.center_crop,
                "train_per_class": profile.train_per_class, "test_per_class": profile.test_per_class,
                "ood_train": profile.detector_ood_train, "ood_share": profile.detector_ood_share,
                "tuning": profile.baseline_tuning_size, "validation": profile.published_validation_fraction,
                "seed": profile.seed, "overlap": overlap,
                # what every set is drawn from: replacing an image makes the detectors stale
                "content": {spec.dataset: data_content(profile, spec.dataset, ("train", "test")),
                            "imagenet": data_content(profile, "imagenet", ("train", "test")),
                            "openimages": data_content(profile, "openimages", ("test",))}}
    return DetectionData(victim_key, size, in_train, in_test, ood["ood_train"], ood["ood_tune"], ood["ood_test"],
                         ood["openimages_test"],
                         {"in": in_val, "imagenet": ood["imagenet_val"], "openimages": ood["openimages_val"]},
                         in_tune, in_fit, ood["defender_files"], overlap, folders, settings)


def imagenet_pool(profile: Profile, size: int, store: ArtifactStore) -> ImageSet:
    """The Knockoff attacker's ImageNet pool exactly as :func:`kx_utils.experiments.attack.knockoff` draws it."""
    key = {**_loading(profile, store, size, "pool"), "split": default_pool_split(profile, "imagenet"),
           "pool_size": profile.pool_size, "seed": profile.seed}
    return memoized(key, lambda: attacker_pool(profile, "imagenet", None, size, store))


def unseen_mask(data: DetectionData, files: list[str]) -> torch.Tensor:
    """True for each file that no detector of ``data`` trained or was tuned on (the attacker-only share)."""
    if not files:
        raise ValueError("the queries carry no file names, so whether a detector saw them cannot be told")
    return torch.tensor([f not in data.defender_files for f in files], dtype=torch.bool)


def images_digest(images: torch.Tensor) -> str:
    """A content hash of an image batch: the cache key of everything computed from it."""
    import hashlib
    h = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}".encode())
    h.update(images.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:24]
