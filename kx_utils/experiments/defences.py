"""Notebook 07 (beyond the paper): the defences of the paper's §6 against the Knockoff attacker, with one harness.

Every attack is Table 2's (budget, recipe, validation split; :class:`~kx_utils.experiments.section5.Section5Settings`)
against the victim's API with a defence in front (:mod:`kx_utils.experiments.defence_specs`), so the undefended and
label-only attacks are Table 2's and Table 6's own runs.  For each defence the harness measures:

- the attacker's loss: the surrogate's accuracy and recovery (:func:`defence_rows`);
- the honest client's cost, on the victim's own test images: the top-1 accuracy of the answers, the share whose
  top-1 class is kept, and the mean L1 and KL distortion of the returned vectors (:func:`benign_utility`);
- PRADA's verdict on Knockoff's query streams against benign ones (:func:`prada_result`);
- DAWN's watermark agreement on the extracted surrogate against a clean surrogate trained alike
  (:func:`dawn_verification`);
- the adaptive attacker against random sampling at the same budget (:func:`adaptive_rows`).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..config.schema import DefencePlan, Profile, evaluation_batch_size
from ..config.seeds import seeded_columns, seeds_for, stream_seed
from ..core.api import answers_to_targets, format_answers
from ..core.defences import Dawn, distortion, prada_stream
from ..core.images import resize_images
from ..core.seeded import seeded_permutation
from ..core.train import pick_device, predict_logits, predict_proba
from ..runtime.artifacts import ArtifactStore, artifact_kind
from .attack import (
    SURROGATE,
    answer_transfer_set,
    attacker_pool,
    knockoff,
    surrogate_settings,
    train_surrogate_model,
    victim_test_set,
)
from .defence_specs import build_defence, defence_label, defence_settings
from .section5 import Section5Settings, table2_attack
from .victims import (
    PRETRAINED_VICTIMS,
    available_victims,
    chance_accuracy,
    get_victim,
    victim_spec,
)

PRADA = artifact_kind("prada_streams", 1)  # PRADA's verdicts on one victim's Knockoff and benign streams
DAWN = artifact_kind("dawn_verification", 1)  # a watermarked and a clean surrogate's agreement with the watermark


def perturbation_specs(plan: DefencePlan) -> list[dict | None]:
    """The answer perturbations of the plan, weakest first within a family; None is the undefended API."""
    return [None,
            *({"name": "reverse_sigmoid", "beta": b, "gamma": plan.reverse_sigmoid_gamma}
              for b in plan.reverse_sigmoid_betas),
            *({"name": "mad", "epsilon": e, "oracle": plan.mad_oracle} for e in plan.mad_epsilons)]


def attacks(plan: DefencePlan) -> list[tuple[str, dict | None]]:
    """(answer format, perturbation) of every attack of the summary table: each perturbation under each of the
    plan's formats, and the undefended API under both formats whatever the plan (they are Table 2's and Table 6's
    runs: the label-only row is the reference every perturbation that keeps the top-1 class is weighed against)."""
    out = [(mode, spec) for mode in plan.answer_modes for spec in perturbation_specs(plan)]
    return out + [(mode, None) for mode in ("probs", "label") if (mode, None) not in out]


def dawn_spec(rate: float) -> dict:
    return {"name": "dawn", "rate": rate}


def seeds_experiment(spec: Mapping | None, mode: str) -> str:
    """Whose seeds an attack runs on: the undefended ones are Table 2's (probabilities) and Table 6's label-only
    runs, each defended one is ``defences``'."""
    if spec is None:
        return "table2" if mode == "probs" else "table6_label"
    return "defences"


def defence_attack(profile: Profile) -> dict:
    """The keyword arguments of every 07 attack: Table 2's (its budget, recipe and validation split)."""
    return dict(Section5Settings.resolve(profile).attack)


def family(spec: Mapping | None, mode: str) -> str:
    if spec is None:
        return "none" if mode == "probs" else "label-only"
    return defence_settings(spec)["name"]


def strength(spec: Mapping | None) -> float | None:
    s = defence_settings(spec)
    if s is None:
        return None
    return float({"reverse_sigmoid": s.get("beta"), "mad": s.get("epsilon"), "dawn": s.get("rate")}[s["name"]])


# ---------------------------------------------------------------- the honest client's cost


def benign_answers(profile: Profile, victim_key: str, store: ArtifactStore | None = None) -> dict:
    """The victim's test images (at its input size), labels and undefended probability vectors."""
    store = store or ArtifactStore(profile.cache_root)
    victim = get_victim(profile, victim_key, store)
    test = victim_test_set(profile, victim_key, victim.image_size, store)
    probs = predict_proba(victim.model, test.images, evaluation_batch_size(profile), pick_device(profile.device))
    return {"victim": victim, "images": test.images, "labels": test.labels, "probs": probs}


def benign_utility(profile: Profile, benign: Mapping, spec: Mapping | None, mode: str = "probs") -> dict:
    """What a defence costs the honest client who sends the victim's test images: the top-1 accuracy of its
    answers (``benign_acc``), the share whose top-1 class is kept, and the mean L1 / KL distance of the
    returned vectors (renormalised, as the attacker reads them) to the true ones."""
    probs = benign["probs"]
    returned = probs if spec is None else build_defence(profile, spec, probs.shape[1])(probs, benign["images"])
    answers = answers_to_targets(format_answers(returned, mode))
    d = distortion(probs, answers)
    return {"benign_acc": float((answers.argmax(1) == benign["labels"]).double().mean()),
            "top1_kept": d["top1_kept"], "l1": d["l1"], "kl": d["kl"], "benign_queries": len(probs),
            "chance": chance_accuracy(benign["labels"])}


# ---------------------------------------------------------------- the attacker's loss


def defence_key(victim_key: str, mode: str, spec: Mapping | None) -> str:
    s = defence_settings(spec)
    if s is None:
        return f"{victim_key}/{mode}/none"
    value = {"reverse_sigmoid": f"b{s.get('beta', '')}", "mad": f"e{s.get('epsilon', '')}",
             "dawn": f"r{s.get('rate', '')}"}[s["name"]]
    return f"{victim_key}/{mode}/{s['name']}_{value}"


def defence_rows(profile: Profile, plan: DefencePlan | None = None, store: ArtifactStore | None = None,
                 on_result: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """The summary table: one row per victim x answer format x perturbation (the undefended API first), the
    attacker's surrogate beside the honest client's utility, and DAWN's rows (:func:`dawn_verification`)."""
    plan = plan or profile.defences
    store = store or ArtifactStore(profile.cache_root)
    attack = defence_attack(profile)
    rows = {}
    for victim_key in available_victims(profile, plan.victims):
        benign = benign_answers(profile, victim_key, store)
        for mode, spec in attacks(plan):
            results = [knockoff(profile, victim_key, mode=mode, defence=spec, seed=seed, store=store, **attack)
                       for seed in seeds_for(profile, seeds_experiment(spec, mode))]
            key = defence_key(victim_key, mode, spec)
            rows[key] = attack_row(results, spec, mode, benign_utility(profile, benign, spec, mode))
            if on_result:
                on_result(key, rows[key])
        for rate in plan.dawn_rates:
            result = dawn_verification(profile, victim_key, rate, seeds_for(profile, "dawn")[0], store)
            key = defence_key(victim_key, "probs", dawn_spec(rate))
            rows[key] = dawn_row(result, benign_utility(profile, benign, dawn_spec(rate)))
    return rows


def attack_row(results, spec: Mapping | None, mode: str, utility: Mapping) -> dict:
    first = results[0]
    per_seed = [{"surrogate_acc": r.final_accuracy, "recovery": r.recovery} for r in results]
    label = "label-only" if spec is None and mode == "label" else defence_label(spec)
    return {"name": first.victim_name, "defence": label, "family": family(spec, mode),
            "strength": strength(spec), "answers": mode, "victim_acc": first.victim_accuracy,
            "chance": utility["chance"], **seeded_columns(per_seed, ["surrogate_acc", "recovery"]), **utility,
            "budget": first.budget, "seeds": [r.settings["seed"] for r in results],
            "test_size": utility["benign_queries"]}


def dawn_row(result: Mapping, utility: Mapping) -> dict:
    return {"name": result["victim_name"], "defence": defence_label(dawn_spec(result["rate"])), "family": "dawn",
            "strength": result["rate"], "answers": "probs", "victim_acc": result["victim_acc"],
            "chance": utility["chance"], "surrogate_acc": result["surrogate_acc"],
            "recovery": result["surrogate_acc"] / result["victim_acc"], **utility, "budget": result["budget"],
            "seeds": [result["seed"]], "test_size": utility["benign_queries"]}


# ---------------------------------------------------------------- DAWN


def dawn_verification(profile: Profile, victim_key: str, rate: float, seed: int,
                      store: ArtifactStore | None = None) -> dict:
    """Extract the victim behind DAWN at ``rate`` with Table 2's attack, and verify: the share of the
    watermarked queries on which the extracted surrogate predicts the watermark's wrong class, against the same
    share for a clean surrogate (the same queries, seed and recipe, undefended answers) — DAWN's false-positive
    baseline, the model that differs from the suspect only by the watermark."""
    store = store or ArtifactStore(profile.cache_root)
    attack, spec = defence_attack(profile), dawn_spec(rate)
    settings = {"suspect": surrogate_settings(profile, victim_key, defence=spec, seed=seed, **attack),
                "clean": surrogate_settings(profile, victim_key, seed=seed, **attack)}
    found = store.load(DAWN, settings)
    if found is not None:
        return found
    victim = get_victim(profile, victim_key, store)
    query_args = {"budget": attack.get("budget"), "seed": seed}
    marked = answer_transfer_set(profile, victim, defence=spec, store=store, **query_args)
    clean = answer_transfer_set(profile, victim, store=store, **query_args)
    if not torch.equal(marked["indices"], clean["indices"]):
        raise RuntimeError("DAWN: the watermarked and the clean transfer sets hold different queries")
    surrogate_size = profile.image_size[victim_spec(victim_key).dataset]
    pool = attacker_pool(profile, store=store, size=surrogate_size)
    queries = pool.images[marked["indices"]]
    sent = resize_images(queries, victim.image_size)  # unchanged where the sizes agree
    watermark = Dawn(str(defence_settings(spec)["key"]).encode(), rate)
    mask = watermark.selected(sent)
    wrong = marked["answers"][mask].argmax(1)
    if not len(wrong):
        raise ValueError(f"DAWN at rate {rate} watermarked none of {len(sent)} queries: raise the rate or the budget")
    recipe = attack["recipe"]
    out = {"victim": victim_key, "victim_name": victim.name, "victim_acc": victim.test_accuracy, "rate": rate,
           "seed": seed, "budget": len(sent), "watermarked": int(mask.sum()), "chance": 1 / (len(victim.classes) - 1)}
    for name, answered in (("suspect", marked), ("clean", clean)):
        # its own checkpoint: the clean run must not resume from (or clobber) Table 2's run of the same settings
        scratch = {**settings[name], "for": "dawn_verification"}
        blob, model = train_surrogate_model(profile, victim, pool, answered, recipe, attack["validation_fraction"],
                                            seed, store, scratch, test_curve=False)
        store.scratch_path(SURROGATE, scratch, "ckpt").unlink(missing_ok=True)
        predicted = predict_logits(model, queries[mask], evaluation_batch_size(profile),
                                   pick_device(profile.device)).argmax(1)
        out[f"agreement_{name}"] = Dawn.agreement(predicted, wrong)
        out["surrogate_acc" if name == "suspect" else "clean_acc"] = blob["history"][-1]["test_acc"]
    store.save(DAWN, settings, out)
    return out


def dawn_table(profile: Profile, plan: DefencePlan | None = None, store: ArtifactStore | None = None) -> dict:
    plan = plan or profile.defences
    rows = {}
    for victim_key in available_victims(profile, plan.victims):
        for rate in plan.dawn_rates:
            r = dawn_verification(profile, victim_key, rate, seeds_for(profile, "dawn")[0], store)
            rows[f"{victim_key}/r{rate:g}"] = {
                "name": r["victim_name"], "rate": rate, "watermarked": r["watermarked"], "budget": r["budget"],
                "agreement_suspect": r["agreement_suspect"], "agreement_clean": r["agreement_clean"],
                "chance": r["chance"], "surrogate_acc": r["surrogate_acc"], "clean_acc": r["clean_acc"],
                "seed": r["seed"]}
    return rows


# ---------------------------------------------------------------- PRADA


def prada_streams(profile: Profile, victim_key: str, plan: DefencePlan, store: ArtifactStore) -> dict:
    """The three clients PRADA watches for one victim, each ``(images, predicted classes)`` of equal length: the
    Knockoff attacker's transfer set (Table 2's first seed, in the order it was sent), and an honest client
    sending the victim's test images in random order and sorted by class."""
    benign = benign_answers(profile, victim_key, store)
    n = min(plan.prada_queries, len(benign["labels"]))
    victim = benign["victim"]
    seed = seeds_for(profile, "table2")[0]
    answered = answer_transfer_set(profile, victim, seed=seed, store=store, budget=defence_attack(profile)["budget"])
    pool = attacker_pool(profile, store=store, size=profile.image_size[victim_spec(victim_key).dataset])
    knock = resize_images(pool.images[answered["indices"][:n]], victim.image_size)
    predicted = benign["probs"].argmax(1)
    order = seeded_permutation(len(predicted), stream_seed(seed, "prada_benign"))[:n]
    by_class = torch.sort(benign["labels"], stable=True).indices
    by_class = by_class[torch.linspace(0, len(by_class) - 1, n).round().long()]  # every class, in class order
    return {"knockoff": (knock, answered["answers"][:n].argmax(1)),
            "benign_random": (benign["images"][order], predicted[order]),
            "benign_sorted": (benign["images"][by_class], predicted[by_class])}


def prada_result(profile: Profile, victim_key: str, store: ArtifactStore | None = None) -> dict:
    """PRADA (on the raw queries in [0, 1], as its authors) over each of :func:`prada_streams`: whether and
    when it flags the client, and the lowest Shapiro-Wilk statistic it saw."""
    store = store or ArtifactStore(profile.cache_root)
    plan = profile.defences
    settings = {"victim": surrogate_settings(profile, victim_key, **table2_attack(profile))["query"],
                "queries": plan.prada_queries, "delta": plan.prada_delta, "test_per_class": profile.test_per_class}
    found = store.load(PRADA, settings)
    if found is not None:
        return found
    out = {}
    for client, (images, predicted) in prada_streams(profile, victim_key, plan, store).items():
        verdict = prada_stream(images.float().div(255), predicted, plan.prada_delta)
        w = [s for _, s in verdict["statistics"]]
        out[client] = {"queries": len(images), "flagged": verdict["first_flagged"] is not None,
                       "first_flagged": verdict["first_flagged"], "tests": len(w),
                       "min_w": min(w) if w else None, "last_w": w[-1] if w else None}
    store.save(PRADA, settings, out)
    return out


def prada_rows(profile: Profile, store: ArtifactStore | None = None) -> dict[str, dict]:
    rows = {}
    for victim_key in available_victims(profile, PRETRAINED_VICTIMS):
        victim = get_victim(profile, victim_key, store)
        for client, r in prada_result(profile, victim_key, store).items():
            rows[f"{victim_key}/{client}"] = {"name": victim.name, "client": client, **r,
                                              "delta": profile.defences.prada_delta}
    return rows


# ---------------------------------------------------------------- adaptive sampling


def adaptive_attack(profile: Profile) -> dict:
    plan = profile.defences
    return {**defence_attack(profile), "budget": plan.adaptive_budget}


def adaptive_rows(profile: Profile, store: ArtifactStore | None = None) -> dict[str, dict]:
    """Adaptive against random sampling: the same budget, recipe and seeds, one row per victim."""
    plan, rows = profile.defences, {}
    for victim_key in available_victims(profile, plan.adaptive_victims):
        sampling = {"reward": plan.adaptive_reward}
        per = {name: [knockoff(profile, victim_key, seed=seed, store=store, sampling=s, **adaptive_attack(profile))
                      for seed in seeds_for(profile, "adaptive")]
               for name, s in (("random", "random"), ("adaptive", sampling))}
        first = per["random"][0]
        test = victim_test_set(profile, victim_key, first.settings["surrogate_size"],
                               store or ArtifactStore(profile.cache_root))
        row = {"name": first.victim_name, "victim_acc": first.victim_accuracy, "budget": first.budget,
               "test_size": len(test), "chance": chance_accuracy(test.labels),
               "reward": plan.adaptive_reward, "seeds": [r.settings["seed"] for r in per["random"]]}
        for name, results in per.items():
            row.update(seeded_columns([{f"{name}_acc": r.final_accuracy, f"{name}_recovery": r.recovery}
                                       for r in results], [f"{name}_acc", f"{name}_recovery"]))
            row[f"{name}_classes_queried"] = _classes_queried(profile, victim_key, results[0], store)
        rows[victim_key] = row
    return rows


def _classes_queried(profile: Profile, victim_key: str, result, store) -> int:
    """How many of the pool's classes the first seed's transfer set drew from (adaptive narrows it)."""
    answered = answer_transfer_set(profile, get_victim(profile, victim_key, store), store=store,
                                   seed=result.settings["seed"], budget=result.budget,
                                   sampling="random" if "sampling" not in result.settings["query"]
                                   else result.settings["query"]["sampling"])
    pool = attacker_pool(profile, store=store, size=profile.image_size[victim_spec(victim_key).dataset])
    return int(len(torch.unique(pool.labels[answered["indices"]])))


# ---------------------------------------------------------------- notes


def notes(profile: Profile, tables: Mapping[str, Mapping]) -> list[str]:
    """What notebook 07 measured against, and where it departs from the defences' published setups."""
    from ..config.profiles import RATIONALE
    plan = profile.defences
    out = [f"Every 07 surrogate is Table 2's attack ({Section5Settings.resolve(profile).budget:,} queries, "
           f"{profile.surrogate_recipe.epochs} epochs) against a defended API; the undefended and label-only rows are "
           "Table 2's and Table 6's own runs.",
           "MAD's defender proxy is the attacker's architecture with its ImageNet weights and a freshly drawn head "
           f"(the authors' code takes a proxy model; oracle {plan.mad_oracle!r}, their 'surrogate' objective, under "
           "which the extreme vertex does not depend on the proxy).",
           "DAWN returns probability vectors here: a watermarked answer swaps the top-1 probability with the wrong "
           "class's (the DAWN paper returns labels).",
           "PRADA measures L2 distances between the raw queries (pixels in [0, 1]), as its authors' code; "
           f"delta {plan.prada_delta:g}, {plan.prada_queries:,} queries per client at most.",
           "The adaptive attacker walks WordNet 3.0's hypernym tree above the pool's classes (each synset's first "
           "hypernym; kx_utils.data.wordnet); its rewards and update follow Orekondy et al. §4.1.2 "
           "(kx_utils.core.adaptive, which says where it departs from their code and from ART's).",
           f"Seeds: perturbations and DAWN on {len(seeds_for(profile, 'defences'))}, adaptive against random on "
           f"{len(seeds_for(profile, 'adaptive'))}."]
    if profile.name == "mini":
        out.append(RATIONALE["defences"])
    return out
