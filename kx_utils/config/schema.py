"""What a run's settings are: the :class:`Profile` type, its Section 5 plan and how an override is applied.

A profile holds every size, epoch count, learning rate and model choice of a run, the sizes of the Section 5
experiments (:class:`Section5Plan`) included.  Every value is checked on construction
(:mod:`kx_utils.core.settings`): an override of the wrong type or out of range, a negative epoch count say,
is a :class:`ProfileError` naming it.  The named profiles (``smoke``, ``mini``, ``paper``) are in
:mod:`kx_utils.config.profiles`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..core.devices import pick_device
from ..core.precision import BATCH_NORM_MODES, PRECISIONS
from ..core.recipe import Recipe
from ..core.settings import ProfileError, choice_problem, field_problems

VICTIM_KEYS = ("caltech", "cubs", "diabetic5", "gtsrb", "cifar10", "gtsrb_5l", "cifar10_9l")



class _Plan:
    """A profile's plan of some experiments: replaced field by field (JSON lists become tuples)."""

    def replace(self, **changes: Any):
        for key, value in changes.items():
            if isinstance(value, list):
                changes[key] = tuple(value)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Section5Plan(_Plan):
    """Sizes of the Section 5 experiments (notebooks 04-06) in one profile.

    ``None`` for a victim list means every victim the paper uses; for a budget it
    means the profile's transfer budget.
    """

    extra_format_victims: tuple[str, ...] | None  # Table 6's top-k / rounded columns
    table7_victims: tuple[str, ...] | None
    table7_batch_sizes: tuple[int, ...] | None  # None: profile.batch_sizes
    figure2_victims: tuple[str, ...]
    figure2_budget: int | None  # queries of the long runs of Figure 2
    figure2_epochs: int | None  # None: the profile's surrogate epochs
    grid_batch_sizes: tuple[int, ...] | None  # 5.2.2's validation grid; None: profile.batch_sizes
    grid_epochs: int | None  # None: the profile's surrogate epochs
    imagenet_control: bool  # 5.2.2: the same grid on as many ImageNet queries
    # (Tables 5-7 and 5.1.3's control have no budget or epochs of their own: they are Table 2's attack, as in
    # the paper, so that Table 2's runs are their probability-vector and batch-64 surrogates)
    # experiments run on the first of the profile's surrogate_seeds only (kx_utils.config.seeds.SEEDED_EXPERIMENTS)
    single_seed: tuple[str, ...] = ()
    # recovery against the number of queries (beyond the paper): victims and budgets ("all": the pool)
    budget_curve_victims: tuple[str, ...] = ()
    budget_curve_budgets: tuple[int | str, ...] = ()
    # Table 7's control (beyond the paper): the largest batch size trained again for as many SGD steps as
    # batch 64 takes (its epochs scaled up), on the seeds of ``table7_equal_steps``
    table7_equal_steps: bool = False
    # Table 7's convergence protocol (the paper's advice in 5.2.1, beyond its table): every batch size trained
    # until the attacker's validation accuracy has not improved for ``table7_convergence_patience`` epochs,
    # ``table7_convergence_epochs`` at most (None: the profile's surrogate epochs), on
    # ``table7_convergence_budget`` queries (None: the profile's transfer budget); () runs none
    table7_convergence_victims: tuple[str, ...] = ()
    table7_convergence_budget: int | None = None
    table7_convergence_epochs: int | None = None
    table7_convergence_patience: int = 3

    def __post_init__(self):
        problems = field_problems(self)
        if problems:
            raise ProfileError("section5: " + "; ".join(problems))



@dataclass(frozen=True)
class DefencePlan(_Plan):
    """Sizes of notebook 07 (beyond the paper): the defences of §6 against Knockoff.

    Every surrogate is Table 2's attack (budget, recipe, validation split) against a defended API, so the
    undefended surrogates are Table 2's own runs.  Strengths: reverse sigmoid's ``beta`` at ``gamma``
    (Lee et al.), MAD's L1 budget ``epsilon`` (Orekondy et al.), DAWN's watermarking rate (Szyller et al.).
    """

    victims: tuple[str, ...] = ("cifar10",)
    answer_modes: tuple[str, ...] = ("probs",)  # the attacker's answers under each defence ("probs", "label")
    reverse_sigmoid_betas: tuple[float, ...] = (0.2, 1.0)
    reverse_sigmoid_gamma: float = 0.1
    mad_epsilons: tuple[float, ...] = (0.5, 1.0)
    mad_oracle: str = "extreme"  # "extreme" (MAD) or "argmax" (MAD-argmax: the top-1 class kept)
    dawn_rates: tuple[float, ...] = (0.01,)
    prada_delta: float = 0.9  # the authors' threshold on the Shapiro-Wilk statistic
    prada_queries: int = 3000  # queries of each client's stream (benign streams: at most the test set)
    adaptive_victims: tuple[str, ...] = ("cifar10",)
    adaptive_budget: int = 2000
    adaptive_reward: str = "all"  # certainty + diversity + loss (Orekondy et al.'s best)

    def __post_init__(self):
        problems = field_problems(self, fractions=("prada_delta",))
        problems += [f"answer_modes: {m!r} is not 'probs' or 'label'" for m in self.answer_modes
                     if m not in ("probs", "label")]
        problems += choice_problem("mad_oracle", self.mad_oracle, ("extreme", "argmax"))
        problems += choice_problem("adaptive_reward", self.adaptive_reward, ("cert", "div", "loss", "all"))
        problems += [f"dawn_rates: {r} is not in (0, 1)" for r in self.dawn_rates if not 0 < r < 1]
        if problems:
            raise ProfileError("defences: " + "; ".join(problems))



SECTION5_KEYS = tuple(f.name for f in dataclasses.fields(Section5Plan))
DEFENCE_KEYS = tuple(f.name for f in dataclasses.fields(DefencePlan))

# the surrogate experiments a profile can limit to one seed (Section5Plan.single_seed; kx_utils.config.seeds)
SEEDED_EXPERIMENTS = ("table2", "table5", "table6", "table6_label", "extra_formats", "table7", "table7_bs16", "table7_equal_steps",
                      "table7_convergence", "figure2",
                      "section_5_1_3", "section_5_2_2", "budget_curves", "defences", "dawn", "adaptive")

# Profile values that are shares of something, from 0 to 1
FRACTIONS = ("validation_fraction", "surrogate_validation_fraction", "detector_ood_share",
             "published_validation_fraction", "baseline_tnr", "center_crop")

@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    # models
    backbone: str  # pretrained architecture of victims, surrogates and the starred detectors
    surrogate_arch: str
    detector_scratch_archs: tuple[str, ...]
    detector_cv_archs: tuple[str, ...]
    # data
    standins: bool  # read the offline stand-in folders of $KX_DATA instead of the paper's datasets
    image_size: dict  # dataset key -> side in pixels for pretrained models
    scratch_image_size: int  # GTSRB-5L / CIFAR10-9L input side
    # the share of a stored side the pretrained models see: every set at a pretrained model's side S is
    # decoded at round(S / center_crop) and centre-cropped to S (the Knockoff authors' test transform,
    # Resize(256) + CenterCrop(224), is 0.875); a victim whose recipe augments with "resized_crop*" trains
    # on random resized crops of the larger images (their RandomResizedCrop(224))
    center_crop: float
    train_per_class: int | None  # cap on victim training images per class (None: all)
    test_per_class: int | None
    pool_size: int | None  # cap on the attacker's pool (None: all)
    # training
    victim_recipe: Recipe
    victim_overrides: dict  # victim key -> recipe changes for that victim only
    scratch_recipe: Recipe
    surrogate_recipe: Recipe
    detector_recipe: Recipe
    # attack
    attacker_pool_split: str  # split of the attacker's ImageNet subset it queries from ("all": every split)
    transfer_budget: int
    batch_sizes: tuple[int, ...]  # Table 7
    validation_fraction: float  # share of the transfer set an attacker holds out (5.2)
    in_distribution_per_class: int | None  # 5.2.2 (paper: 380 Bing images per class)
    # detection
    detector_ood_train: int | None  # ImageNet images for training (paper: 90,000)
    detector_ood_test: int | None  # (paper: 10,000)
    openimages_test: int | None  # (paper: 20,000)
    cv_folds: int
    baseline_tnr: float
    # Sections 5.1-5.2 (notebooks 04-06): every profile states its own plan, there is no default
    section5: Section5Plan
    # notebook 07 (beyond the paper): the defences against Knockoff
    defences: DefencePlan = DefencePlan()
    # detection (03_detection): what the paper fixes, or a mini/smoke economy, per field
    detector_arch: str | None = None  # the Table 4 backbone; None: best CV score on CUBS's training data
    detector_cv_cs: int | tuple[float, ...] = 10  # strengths C tried by the CV (sklearn's Cs: a count or values)
    detector_cv_tol: float = 1e-4  # L-BFGS stopping tolerance (sklearn's default)
    detector_scratch_train: int | None = None  # cap per side (victim / ImageNet) for scratch detectors
    detector_scratch_image_size: int | None = None  # scratch detectors' input side (None: the dataset's)
    baseline_tuning_size: int = 1000  # images per side for tuning ODIN and Mahalanobis
    odin_temperatures: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
    odin_epsilons: tuple[float, ...] = tuple(round(0.0002 * i, 4) for i in range(21))
    mahalanobis_epsilons: tuple[float, ...] = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01, 0.05,
                                               0.1, 0.2)
    mahalanobis_shrinkage: str = "ledoit_wolf"  # tied covariance estimate: "ledoit_wolf" or "empirical"
    # share of the ImageNet train split the defender trains and tunes on; the rest is never shown to
    # a detector, and the filter and 06 are judged on Knockoff queries from it
    detector_ood_share: float = 0.5
    # Lee et al.'s / Liang et al.'s protocol: their settings fitted on this share of each test set
    published_validation_fraction: float = 0.1
    # surrogates fine-tune all but this many leading backbone blocks (0: the whole network, as the paper)
    surrogate_frozen_blocks: int = 0
    # candidate CPU speed-ups of surrogate training, off by default (kx_utils.core.precision; `bench` weighs
    # them): "bf16_pointwise" computes the 1x1 convolutions and the classifier in bf16, "frozen" keeps the
    # batch-norm layers on their pretrained statistics
    surrogate_precision: str = "fp32"
    surrogate_batch_norm: str = "train"
    # independent repetitions of every surrogate result (transfer-set sample and initialisation)
    surrogate_seeds: tuple[int, ...] = (0,)
    # share of the transfer set Table 2's attacker holds out to watch its own validation accuracy
    surrogate_validation_fraction: float = 0.0
    # run
    seed: int = 0
    eval_batch_size: int = 256  # evaluation batch on the CPU
    # evaluation batch on a CUDA GPU, where a 224 px ResNet34 answers 256 images in a few milliseconds and
    # bigger batches keep the GPU busy (`python -m kx_utils bench --device cuda` times 256 to 4,096)
    cuda_eval_batch_size: int = 1024
    # torch.compile the network that fit() trains.  Off by default: compiling costs tens of seconds per
    # architecture and input shape on the first steps of every fit (dozens of surrogates), it measured no
    # faster on the development CPU (figures/mini/bench.md, 1.02x), and on a GPU its gain is what
    # `bench --device cuda` measures (its "compile" rows): turn it on where those rows show it pays.
    compile_models: bool = False
    data_root: str | None = None  # None: $KX_DATA
    cache_root: str | None = None  # None: $KX_CACHE or <repo>/.kx_cache
    device: str = "auto"
    progress: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not isinstance(self.section5, Section5Plan):
            raise ProfileError(f"profile {self.name!r}: section5 must be a Section5Plan, "
                               f"got {type(self.section5).__name__}")
        if not self.surrogate_seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                               for s in self.surrogate_seeds):
            raise ProfileError(f"profile {self.name!r}: surrogate_seeds must be one or more integers, "
                               f"got {self.surrogate_seeds!r}")
        for key in ("eval_batch_size", "cuda_eval_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ProfileError(f"profile {self.name!r}: {key} must be a positive integer, got {value!r}")
        unknown = sorted(set(self.section5.single_seed) - set(SEEDED_EXPERIMENTS))
        if unknown:
            raise ProfileError(f"profile {self.name!r}: unknown experiment(s) {unknown} in section5.single_seed; "
                               f"valid: {', '.join(SEEDED_EXPERIMENTS)}")
        problems = field_problems(self, may_be_zero=("surrogate_frozen_blocks", "surrogate_seeds", "seed"),
                                  fractions=FRACTIONS)
        sizes = self.image_size.values() if isinstance(self.image_size, dict) else ()
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
            problems.append(f"image_size must map datasets to sides of 1 pixel or more, got {self.image_size!r}")
        problems += choice_problem("surrogate_precision", self.surrogate_precision, PRECISIONS)
        problems += choice_problem("surrogate_batch_norm", self.surrogate_batch_norm, BATCH_NORM_MODES)
        if not problems and self.center_crop == 0:
            problems.append("center_crop must be above 0 (the share of the stored side a model sees), got 0")
        if problems:
            raise ProfileError(f"profile {self.name!r}: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "Profile":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILE_KEYS = tuple(f.name for f in dataclasses.fields(Profile))
RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(Recipe))


def _replaced(key: str, value: Any, base: Any, valid_keys: tuple[str, ...], what: str) -> Any:
    """``base`` with the changes of ``value`` (a dict of ``valid_keys``), or ``value`` if it is already one."""
    if isinstance(value, type(base)):
        return value
    if not isinstance(value, dict):
        raise ProfileError(f"{key!r} must be a dict of {what} values, got {type(value).__name__}")
    unknown = sorted(set(value) - set(valid_keys))
    if unknown:
        raise ProfileError(f"unknown key(s) {unknown} in override of {key!r}; "
                           f"valid {what} keys: {', '.join(valid_keys)}")
    try:
        return base.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    except ProfileError as exc:
        message = str(exc)
        raise ProfileError(message if message.startswith(f"{key}:") else f"{key}: {message}") from None


def _check_victim_overrides(value: Any, base: Recipe) -> dict:
    if not isinstance(value, dict):
        raise ProfileError(f"victim_overrides must be a dict victim -> recipe changes, got {value!r}")
    for victim, changes in value.items():
        if victim not in VICTIM_KEYS:
            raise ProfileError(f"unknown victim {victim!r} in victim_overrides; valid victims: "
                               f"{', '.join(VICTIM_KEYS)}")
        if not isinstance(changes, dict):
            raise ProfileError(f"victim_overrides[{victim!r}] must be a dict of recipe changes, got {changes!r}")
        _replaced(f"victim_overrides[{victim!r}]", changes, base, RECIPE_KEYS, "recipe")  # its values, checked now
    return value


def with_overrides(base: Profile, **overrides: Any) -> Profile:
    """``base`` with ``overrides`` applied, each checked: recipe fields and the Section 5 plan take a dict of
    the keys to change (``surrogate_recipe={"epochs": 8}``), lists become tuples (JSON has none)."""
    unknown = sorted(set(overrides) - set(PROFILE_KEYS))
    if unknown:
        raise ProfileError(f"unknown profile key(s) {unknown}; valid keys: {', '.join(PROFILE_KEYS)}")
    changes = {}
    for key, value in overrides.items():
        current = getattr(base, key)
        if isinstance(current, Recipe):
            value = _replaced(key, value, current, RECIPE_KEYS, "recipe")
        elif isinstance(current, Section5Plan):
            value = _replaced(key, value, current, SECTION5_KEYS, "Section 5")
        elif isinstance(current, DefencePlan):
            value = _replaced(key, value, current, DEFENCE_KEYS, "defences")
        elif isinstance(value, list):
            value = tuple(value)
        elif key == "image_size" and isinstance(value, dict):
            value = {**current, **value}
        elif key == "victim_overrides":
            value = _check_victim_overrides(value, base.victim_recipe)
        changes[key] = value
    return base.replace(**changes)


def evaluation_batch_size(profile: Profile) -> int:
    """``cuda_eval_batch_size`` where the profile runs on a GPU, else ``eval_batch_size``."""
    if pick_device(profile.device).type == "cuda":
        return profile.cuda_eval_batch_size
    return profile.eval_batch_size
