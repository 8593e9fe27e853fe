"""The paper's seven victims: five fine-tuned pretrained models and two trained from scratch.

``get_victim(profile, "cifar10")`` returns the trained victim of a profile,
training it on the first call and loading the cached artifact afterwards, so any
notebook can run alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..config.schema import VICTIM_KEYS, Profile, evaluation_batch_size
from ..core.models import SHORT_NAMES, Classifier, build_model
from ..core.recipe import Recipe
from ..core.train import fit, per_class_accuracy, pick_device, predict_logits
from ..data.catalog import absent_optional_datasets, dataset_info
from ..data.datasets import ImageSet, load_split, split_content_digest
from ..data.imagefolder import resized_side
from ..runtime.artifacts import ArtifactStore, artifact_kind

# v2: keyed by the content of its train and test splits
VICTIM = artifact_kind("victim", 2)  # a trained victim: weights, history, test accuracy


@dataclass(frozen=True)
class VictimSpec:
    key: str
    dataset: str
    scratch_arch: str | None = None  # None: the profile's pretrained backbone
    flips: bool = True  # horizontal flips keep the label (not for traffic signs)

    @property
    def pretrained(self) -> bool:
        return self.scratch_arch is None


VICTIMS: dict[str, VictimSpec] = {v.key: v for v in [
    VictimSpec("caltech", "caltech256"),
    VictimSpec("cubs", "cubs200"),
    VictimSpec("diabetic5", "diabetic5"),
    VictimSpec("gtsrb", "gtsrb", flips=False),
    VictimSpec("cifar10", "cifar10"),
    VictimSpec("gtsrb_5l", "gtsrb", scratch_arch="gtsrb_5l", flips=False),
    VictimSpec("cifar10_9l", "cifar10", scratch_arch="cifar10_9l"),
]}
assert tuple(VICTIMS) == VICTIM_KEYS
PRETRAINED_VICTIMS = tuple(k for k, v in VICTIMS.items() if v.pretrained)
SCRATCH_VICTIMS = tuple(k for k, v in VICTIMS.items() if not v.pretrained)


def victim_spec(key: str) -> VictimSpec:
    if key not in VICTIMS:
        raise KeyError(f"unknown victim {key!r}; valid victims: {', '.join(VICTIMS)}")
    return VICTIMS[key]


def available_victims(profile: Profile, keys=None) -> tuple[str, ...]:
    """The victims among ``keys`` (default: all seven) that a run of ``profile`` can train.

    Only a victim whose dataset the profile may go without (mini's Diabetic5 stand-in, see
    ``DatasetInfo.standin_optional``) is left out when its data is not present; its rows then read
    "data not present" in the report.  A missing dataset that is required stays in, so that loading
    it fails with the error that says how to get it.
    """
    absent = absent_optional_datasets(profile.standins, profile.data_root)
    return tuple(k for k in (VICTIMS if keys is None else keys) if victim_spec(k).dataset not in absent)


def victim_arch(profile: Profile, key: str) -> str:
    spec = victim_spec(key)
    return spec.scratch_arch or profile.backbone


def victim_name(profile: Profile, key: str) -> str:
    """The paper's naming, {Dataset}-{model}: CIFAR10-RN34 in paper, CIFAR10-MNV2 in mini."""
    spec = victim_spec(key)
    return f"{dataset_info(spec.dataset).paper_name}-{SHORT_NAMES[victim_arch(profile, key)]}"


def victim_image_size(profile: Profile, key: str) -> int:
    spec = victim_spec(key)
    return profile.image_size[spec.dataset] if spec.pretrained else profile.scratch_image_size


def victim_recipe(profile: Profile, key: str) -> Recipe:
    spec = victim_spec(key)
    recipe = profile.victim_recipe if spec.pretrained else profile.scratch_recipe
    recipe = recipe.replace(**profile.victim_overrides.get(key, {}))
    if not spec.flips and recipe.augment == "flip":
        recipe = recipe.replace(augment="none")
    if not spec.flips and recipe.augment in ("crop_flip", "resized_crop_flip"):
        recipe = recipe.replace(augment=recipe.augment.removesuffix("_flip"))
    return recipe


def stored_side(profile: Profile, size: int) -> int:
    """The side a pretrained model's input of ``size`` is resized from: ``size / center_crop``."""
    return resized_side(size, profile.center_crop)


def load_dataset_split(profile: Profile, dataset: str, split: str, size: int,
                       per_class: int | None = None, store: ArtifactStore | None = None, *,
                       pretrained_view: bool = True, uncropped: bool = False) -> ImageSet:
    """A split of a registered dataset at ``size`` px, capped to ``per_class`` images per class.

    ``pretrained_view``: the set as a pretrained model sees it, each image resized to
    ``size / center_crop`` and its centre kept (the profile's ``center_crop``: the Knockoff code's
    Resize(256) + CenterCrop(224) in ``paper``); ``False`` for the scratch victims' 32 px sets, which
    the Knockoff code feeds whole.  ``uncropped``: the images at ``size / center_crop``, whole (a victim's
    training set, for its random resized crops)."""
    crop = profile.center_crop if pretrained_view else 1.0
    side, crop = (resized_side(size, crop), 1.0) if uncropped else (size, crop)
    full = load_split(dataset, split, standins=profile.standins, size=side, root=profile.data_root,
                      store=store or ArtifactStore(profile.cache_root), crop=crop)
    return full.per_class(per_class, seed=profile.seed)


def victim_data(profile: Profile, key: str, store: ArtifactStore | None = None, for_training: bool = False
                ) -> tuple[ImageSet, ImageSet]:
    """The victim's (train, test) sets at its input size, with the profile's per-class caps.

    ``for_training``: the training set as the victim's augmentation takes it (decoded larger, uncropped, for
    a random resized crop)."""
    spec = victim_spec(key)
    size = victim_image_size(profile, key)
    resized_crops = for_training and victim_recipe(profile, key).augment.startswith("resized_crop")
    train = load_dataset_split(profile, spec.dataset, "train", size, profile.train_per_class, store,
                               pretrained_view=spec.pretrained, uncropped=resized_crops)
    test = load_dataset_split(profile, spec.dataset, "test", size, profile.test_per_class, store,
                              pretrained_view=spec.pretrained)
    return train, test


def data_content(profile: Profile, dataset: str, splits, with_content: bool = True) -> dict:
    """split -> the sha256 of its files (:func:`kx_utils.data.datasets.split_content_digest`), for artifact keys.

    ``with_content=False`` names the splits instead, reading nothing: enough to tell two
    experiments apart on the same data (the grid's de-duplication), never to key an artifact."""
    if not with_content:
        return {split: f"{dataset}/{split}" for split in splits}
    return {split: split_content_digest(dataset, split, standins=profile.standins, root=profile.data_root,
                                        store=ArtifactStore(profile.cache_root)) for split in splits}


def victim_settings(profile: Profile, key: str, with_content: bool = True) -> dict:
    """Everything that determines a trained victim: the key of its artifact, its data's content included
    (``with_content=False``: :func:`data_content`'s placeholder, for comparing settings only)."""
    spec = victim_spec(key)
    return {
        "data": data_content(profile, spec.dataset, ("train", "test"), with_content),
        "victim": key, "dataset": spec.dataset, "arch": victim_arch(profile, key),
        "pretrained": spec.pretrained, "image_size": victim_image_size(profile, key),
        "center_crop": profile.center_crop if spec.pretrained else 1.0,
        "standins": profile.standins, "train_per_class": profile.train_per_class,
        "test_per_class": profile.test_per_class, "recipe": victim_recipe(profile, key).as_dict(),
        "seed": profile.seed,
    }


@dataclass
class Victim:
    key: str
    name: str
    model: Classifier
    classes: list[str]
    image_size: int
    test_accuracy: float
    per_class_accuracy: list[float]
    history: list[dict]
    train_seconds: float
    settings: dict = field(repr=False)
    from_cache: bool = False


def get_victim(profile: Profile, key: str, store: ArtifactStore | None = None,
               train_if_missing: bool = True) -> Victim:
    """The trained victim ``key`` of ``profile``: loaded from the cache, else trained and stored."""
    store = store or ArtifactStore(profile.cache_root)
    settings = victim_settings(profile, key)
    blob = store.load(VICTIM, settings)
    from_cache = blob is not None
    if blob is None:
        if not train_if_missing:
            raise FileNotFoundError(f"victim {key} of profile {profile.name} is not trained yet: "
                                    "run notebooks/01_victims.ipynb first")
        blob = _train_victim(profile, key, settings, store)
        store.save(VICTIM, settings, blob)
        checkpoint = store.scratch_path(VICTIM, settings, "ckpt")
        checkpoint.unlink(missing_ok=True)
    model = build_model(settings["arch"], len(blob["classes"]), pretrained=False)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return Victim(key=key, name=victim_name(profile, key), model=model, classes=list(blob["classes"]),
                  image_size=settings["image_size"], test_accuracy=float(blob["test_accuracy"]),
                  per_class_accuracy=list(blob["per_class_accuracy"]), history=list(blob["history"]),
                  train_seconds=float(blob["train_seconds"]), settings=settings, from_cache=from_cache)


def _train_victim(profile: Profile, key: str, settings: dict, store: ArtifactStore) -> dict:
    train, test = victim_data(profile, key, store, for_training=True)
    torch.manual_seed(profile.seed)
    model = build_model(settings["arch"], train.num_classes, pretrained=settings["pretrained"])
    recipe = victim_recipe(profile, key)
    t0 = time.perf_counter()
    history = fit(model, train.images, train.labels, recipe, eval_sets={"test": (test.images, test.labels)},
                  seed=profile.seed, device=pick_device(profile.device),
                  checkpoint=store.scratch_path(VICTIM, settings, "ckpt"), progress=profile.progress,
                  desc=f"victim {victim_name(profile, key)}", eval_batch_size=evaluation_batch_size(profile),
                  compile_model=profile.compile_models, input_size=settings["image_size"])
    seconds = time.perf_counter() - t0
    pred = predict_logits(model, test.images, evaluation_batch_size(profile), pick_device(profile.device)).argmax(1)
    return {
        "state_dict": model.state_dict(),
        "classes": list(train.classes),
        "history": history,
        "test_accuracy": float((pred == test.labels).float().mean()),
        "per_class_accuracy": per_class_accuracy(pred, test.labels, train.num_classes),
        "train_seconds": sum(row["train_seconds"] for row in history) if history else seconds,
        "train_size": len(train), "test_size": len(test),
    }


def chance_accuracy(labels: torch.Tensor) -> float:
    """Accuracy of always answering the most frequent test class (>= 1 / number of classes)."""
    return float(torch.bincount(labels).max()) / len(labels)


CLEARLY_LEARNED = 1.5  # a victim this many times above its chance accuracy has learned its task


def clearly_learned(victim_accuracy: float, chance: float) -> bool:
    """Whether a victim is clearly above chance, so that its surrogates can be held to beat chance.

    Mini's Diabetic5 stand-in (48 px fundus images, grades hardly visible) is only a few points
    above always answering "no DR"; its surrogates cannot honestly be required to beat that.
    """
    return victim_accuracy > CLEARLY_LEARNED * chance


def require_above_chance(row: Mapping, chance: float, accuracies: Mapping[str, float | None]) -> None:
    """Raise when a surrogate of a victim clearly above chance (``row["victim_acc"]``) does not beat chance.

    A victim barely above chance itself (mini's Diabetic5 stand-in) cannot be held to it; an accuracy of
    None was not measured. Callers apply it only where numbers mean something (outside ``smoke``)."""
    if not clearly_learned(row["victim_acc"], chance):
        return
    for what, acc in accuracies.items():
        if acc is not None and not acc > chance:
            raise RuntimeError(f"{row['name']} {what}: surrogate accuracy {acc:.3f} <= chance {chance:.3f}, "
                               f"for a victim at {row['victim_acc']:.3f}")


def chance_level(profile: Profile, key: str, store: ArtifactStore | None = None) -> float:
    """The victim's chance accuracy: always answering its most frequent test class."""
    return chance_accuracy(victim_data(profile, key, store)[1].labels)


def table1_rows(profile: Profile, store: ArtifactStore | None = None) -> dict:
    """Table 1 as measured: input size, classes, train and test images of each victim dataset."""
    rows = {}
    for key in available_victims(profile, PRETRAINED_VICTIMS):
        spec = victim_spec(key)
        train, test = victim_data(profile, key, store)
        size = victim_image_size(profile, key)
        scratch = [k for k in SCRATCH_VICTIMS if victim_spec(k).dataset == spec.dataset]
        shown = f"{size}x{size}"
        if scratch:
            s = victim_image_size(profile, scratch[0])
            shown = f"{s}x{s} / {size}x{size}"
        info = dataset_info(spec.dataset)
        rows[spec.dataset] = {"image_size": shown, "classes": train.num_classes, "train": len(train),
                              "test": len(test), "name": info.paper_name,
                              "source": info.standin if profile.standins else info.folder,
                              "standin_note": info.standin_note if profile.standins else ""}
    return rows
