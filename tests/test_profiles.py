import pytest

from kx_utils import PROFILES, ProfileError, get_profile


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
