import pytest

from kx_utils import PROFILES, ProfileError, get_profile
from kx_utils.config.profiles import RATIONALE
from kx_utils.config.schema import Section5Plan


def test_three_profiles_exist_and_paper_keeps_the_papers_settings():
    assert set(PROFILES) == {"smoke", "mini", "paper"}
    paper = get_profile("paper")
    assert paper.backbone == paper.surrogate_arch == "resnet34"
    assert paper.transfer_budget == 100_000
    assert (paper.victim_recipe.epochs, paper.victim_recipe.lr) == (200, 0.1)
    assert paper.victim_recipe.milestones == (0.3, 0.6, 0.9) and paper.victim_recipe.gamma == 0.1
    assert paper.scratch_recipe.optimizer == "adam" and paper.scratch_recipe.milestones == (0.5,)
    assert paper.batch_sizes == (16, 64, 128, 256)
    assert set(paper.image_size.values()) == {224}


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ProfileError, match="smoke, mini, paper"):
        get_profile("huge")


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ProfileError, match="transfer_budget"):
        get_profile("mini", transfer_budgett=10)


def test_overrides_replace_values_and_merge_recipes():
    p = get_profile("mini", transfer_budget=123, surrogate_recipe={"epochs": 7, "milestones": [0.5]})
    assert p.transfer_budget == 123
    assert p.surrogate_recipe.epochs == 7 and p.surrogate_recipe.milestones == (0.5,)
    assert p.surrogate_recipe.lr == get_profile("mini").surrogate_recipe.lr  # untouched fields kept
    assert get_profile("mini").transfer_budget != 123  # the registry itself is not modified


def test_bad_recipe_and_victim_override_keys_are_errors():
    with pytest.raises(ProfileError, match="valid recipe keys"):
        get_profile("mini", surrogate_recipe={"epoch": 3})
    with pytest.raises(ProfileError, match="valid victims"):
        get_profile("mini", victim_overrides={"mnist": {"epochs": 1}})
    with pytest.raises(ProfileError, match="valid recipe keys"):
        get_profile("mini", victim_overrides={"cifar10": {"lr_max": 1}})


def test_image_size_override_merges_per_dataset():
    p = get_profile("mini", image_size={"cifar10": 32})
    assert p.image_size["cifar10"] == 32 and p.image_size["caltech256"] == 48


def test_every_profile_carries_its_own_section5_plan():
    paper, mini, smoke = (get_profile(n).section5 for n in ("paper", "mini", "smoke"))
    assert all(isinstance(plan, Section5Plan) for plan in (paper, mini, smoke))
    assert len({paper, mini, smoke}) == 3
    # the paper runs everything at the profile's own sizes
    assert (paper.extra_format_victims, paper.table7_victims, paper.table7_batch_sizes, paper.figure2_budget,
            paper.figure2_epochs, paper.grid_epochs, paper.imagenet_control) == (None,) * 6 + (False,)
    # mini: Figure 2 from Table 2's runs; Section 5 is Table 2's attack in every profile (the plan has no budget
    # or epochs of its own), with three seeds for the scratch victims and one for the label-only column
    assert mini.table7_batch_sizes == (64, 128, 256) and (mini.figure2_budget, mini.figure2_epochs) == (None, None)
    assert not hasattr(mini, "budget") and not hasattr(mini, "epochs")
    # claims 1 and 2 rest on three seeds: Table 5 and the label-only column are not cut to one
    assert not {"table5", "table6_label"} & set(mini.single_seed) and {"table7", "defences"} <= set(mini.single_seed)
    assert smoke.table7_convergence_victims == ("cifar10",) and mini.table7_convergence_victims == ()
    assert smoke.table7_victims == ("cifar10", "gtsrb_5l") and smoke.figure2_victims == mini.figure2_victims
    assert {"surrogate_epochs", "section5_budget", "table7", "single_seed", "figure2", "grid_epochs",
            "defences"} <= set(RATIONALE)
    assert get_profile("mini").surrogate_seeds == (0, 1, 2) and get_profile("paper").surrogate_seeds == (0,)


def test_a_profile_without_a_section5_plan_cannot_exist():
    with pytest.raises(ProfileError, match="section5 must be a Section5Plan"):
        get_profile("mini").replace(name="custom", section5=None)
    fields = {k: v for k, v in get_profile("mini").__dict__.items() if k != "section5"}
    with pytest.raises(TypeError, match="section5"):
        type(get_profile("mini"))(**fields)


def test_section5_overrides_merge_and_unknown_keys_are_errors():
    p = get_profile("mini", section5={"figure2_epochs": 6, "grid_batch_sizes": [32, 64]})
    assert p.section5.figure2_epochs == 6 and p.section5.grid_batch_sizes == (32, 64)
    assert p.section5.table7_victims == ("caltech",)  # untouched values kept
    with pytest.raises(ProfileError, match="valid Section 5 keys"):
        get_profile("mini", section5={"figure_epochs": 6})


def test_mini_is_the_paper_with_its_documented_changes():
    paper, mini = get_profile("paper").as_dict(), get_profile("mini").as_dict()
    # what mini keeps of the paper
    for key in ("detector_scratch_archs", "scratch_image_size", "train_per_class", "test_per_class",
                "batch_sizes", "validation_fraction", "cv_folds", "baseline_tnr", "seed"):
        assert mini[key] == paper[key], key
    # and some of what it changes (README, "What mini changes, and why")
    assert (mini["backbone"], mini["transfer_budget"], mini["image_size"]["cifar10"]) == ("mobilenet_v2", 12000, 48)
    assert mini["scratch_recipe"] == {**paper["scratch_recipe"], "epochs": 10}
    assert mini["detector_recipe"] == {**paper["detector_recipe"], "epochs": 3}
    assert (mini["detector_arch"], mini["detector_ood_share"]) == (None, 0.5)


def test_seeds_must_be_given_and_single_seed_names_known_experiments():
    assert get_profile("mini", surrogate_seeds=[3, 4]).surrogate_seeds == (3, 4)
    with pytest.raises(ProfileError, match="surrogate_seeds must be one or more integers"):
        get_profile("mini", surrogate_seeds=[])
    with pytest.raises(ProfileError, match="surrogate_seeds must be one or more integers"):
        get_profile("mini", surrogate_seeds=[0, "1"])
    with pytest.raises(ProfileError, match=r"unknown experiment\(s\) \['table7_bs61'\]"):
        get_profile("mini", section5={"single_seed": ["table7_bs61"]})


def test_the_speed_up_switches_take_only_their_choices():
    from kx_utils import ProfileError, get_profile
    assert get_profile("mini", surrogate_batch_norm="frozen").surrogate_batch_norm == "frozen"
    with pytest.raises(ProfileError, match="surrogate_precision must be one of 'fp32', 'bf16_pointwise', got 'bf16'"):
        get_profile("mini", surrogate_precision="bf16")
