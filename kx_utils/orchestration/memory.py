"""How much memory a profile's decoded image sets take: the plan's "memory" lines.

Every split is decoded once into one preallocated uint8 tensor (:func:`kx_utils.data.imagefolder.decode_images`),
so decoding a split peaks at that tensor plus one image per decoding thread, whatever the stored images'
sizes.  What a run holds at once is larger: the Knockoff attack keeps the attacker's pool and copies the
transfer set out of it (with the paper's 100,000 queries, the whole pool again), and a victim trains on
its training set at the larger side its random resized crops start from.
"""

from __future__ import annotations

from ..config.schema import Profile
from ..data.catalog import DATASETS
from ..data.imagefolder import decoded_bytes, resized_side


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def split_sizes(profile: Profile) -> dict[str, tuple[int, int]]:
    """``dataset/split`` -> (images, bytes decoded at the profile's side) by the paper's image counts."""
    out = {}
    for key, info in DATASETS.items():
        size = profile.image_size[key]
        for split, count in (("train", info.paper_train), ("test", info.paper_test)):
            if count and split in info.splits:
                out[f"{info.folder}/{split}"] = (count, decoded_bytes(count, size))
    return out


def memory_lines(profile: Profile) -> list[str]:
    """The decoded size of every paper split, and the largest set a run holds at once."""
    sizes = split_sizes(profile)
    lines = ["Memory (uint8, 3 bytes a pixel, by the paper's image counts; decoding a split peaks at its "
             "tensor plus one image per thread):"]
    for name, (count, size) in sizes.items():
        lines.append(f"  {name:24s} {count:>7,} images: {_gb(size)}")
    budget = profile.transfer_budget
    pool_side = profile.image_size["imagenet"]
    pool = DATASETS["imagenet"]
    pool_images = (pool.paper_train or 0) + (pool.paper_test or 0) if profile.attacker_pool_split == "all" \
        else (pool.paper_train or 0)
    if profile.pool_size is not None:
        pool_images = min(pool_images, profile.pool_size)
    attack = decoded_bytes(pool_images, pool_side) + decoded_bytes(min(budget, pool_images), pool_side)
    largest_victim = max(DATASETS[k].paper_train or 0 for k in ("caltech256", "cubs200", "diabetic5", "gtsrb", "cifar10"))
    train_side = resized_side(max(profile.image_size.values()), profile.center_crop)
    lines.append(f"  a Knockoff attack holds its pool and its {budget:,}-query transfer set: {_gb(attack)}; the "
                 f"largest victim training set ({largest_victim:,} images at {train_side} px, uncropped for its "
                 f"resized crops): {_gb(decoded_bytes(largest_victim, train_side))}")
    return lines
