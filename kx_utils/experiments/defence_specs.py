"""Defences and sampling strategies as they are named in settings: small JSON specs, and the objects they build.

A defence spec is a dict with a ``name`` (``"reverse_sigmoid"``, ``"mad"``, ``"dawn"``) and its parameters;
:func:`defence_settings` fills in the defaults, so that two calls naming the same defence share one cache key,
and :func:`build_defence` makes the answer transform the API applies (:mod:`kx_utils.core.defences`).  Specs,
not objects, travel through the grid: a task's arguments stay JSON.  ``sampling`` is ``"random"`` (the paper's
Knockoff, named nowhere in the settings, so every earlier transfer set keeps its key) or ``"adaptive"`` / a dict
of the adaptive strategy's parameters (:mod:`kx_utils.experiments.adaptive`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..config.schema import Profile, evaluation_batch_size
from ..core.defences import MAD, Dawn, ReverseSigmoid
from ..core.models import build_model

DEFAULTS: dict[str, dict[str, Any]] = {
    # Lee et al.'s parameters as ART names them (beta: the magnitude, gamma: the convergence)
    "reverse_sigmoid": {"beta": 1.0, "gamma": 0.1},
    # Orekondy et al.'s defaults: the extreme oracle on their "surrogate" objective; the defender's proxy is
    # the attacker's architecture with its ImageNet weights and a head drawn with proxy_seed
    "mad": {"epsilon": 1.0, "oracle": "extreme", "objective": "surrogate", "proxy_seed": 0},
    # the key is a reproduction's, not a secret: settings name it so that a rerun draws the same watermark
    "dawn": {"rate": 0.01, "key": "kx-dawn-0"},
}
# the paper's hierarchy: WordNet above the pool's classes (kx_utils.data.wordnet); "flat" for a pool of other classes
SAMPLING_DEFAULTS = {"strategy": "adaptive", "reward": "all", "hierarchy": "wordnet"}
HIERARCHIES = ("wordnet", "flat")


def defence_settings(spec: Mapping | None) -> dict | None:
    """The spec with its defaults filled in (what enters a transfer set's settings); None for no defence."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or spec.get("name") not in DEFAULTS:
        raise ValueError(f"a defence is a dict with a name among {', '.join(DEFAULTS)} and its parameters, "
                         f"got {spec!r}")
    name = spec["name"]
    unknown = sorted(set(spec) - {"name"} - set(DEFAULTS[name]))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} of the {name} defence; valid: "
                         f"{', '.join(DEFAULTS[name])}")
    return {"name": name, **DEFAULTS[name], **{k: v for k, v in spec.items() if k != "name"}}


def build_defence(profile: Profile, spec: Mapping, num_classes: int):
    """The answer transform ``(probs, images) -> probs'`` a spec names, for a victim of ``num_classes``."""
    s = defence_settings(spec)
    if s["name"] == "reverse_sigmoid":
        return ReverseSigmoid(beta=float(s["beta"]), gamma=float(s["gamma"]))
    if s["name"] == "dawn":
        return Dawn(str(s["key"]).encode(), rate=float(s["rate"]))
    with torch.random.fork_rng(devices=[]):  # the proxy's head is drawn without moving the caller's stream
        torch.manual_seed(int(s["proxy_seed"]))
        proxy = build_model(profile.surrogate_arch, num_classes, pretrained=True)
    return MAD(proxy, float(s["epsilon"]), oracle=s["oracle"], objective=s["objective"],
               batch_size=evaluation_batch_size(profile), device=profile.device)


def defence_label(spec: Mapping | None) -> str:
    """A short name for tables and plots: "none", "reverse sigmoid β=1 γ=0.1", "MAD ε=0.5", "DAWN r=1%"."""
    s = defence_settings(spec)
    if s is None:
        return "none"
    if s["name"] == "reverse_sigmoid":
        return f"reverse sigmoid β={s['beta']:g} γ={s['gamma']:g}"
    if s["name"] == "mad":
        return f"MAD{'-argmax' if s['oracle'] == 'argmax' else ''} ε={s['epsilon']:g}"
    return f"DAWN r={100 * s['rate']:g}%"


def sampling_settings(profile: Profile, sampling: str | Mapping) -> dict | None:
    """None for random sampling; the adaptive strategy's parameters (defaults filled in) otherwise."""
    if sampling == "random":
        return None
    if sampling == "adaptive":
        sampling = {}
    if not isinstance(sampling, Mapping):
        raise ValueError(f'sampling must be "random", "adaptive" or a dict of the adaptive strategy\'s parameters, '
                         f"got {sampling!r}")
    unknown = sorted(set(sampling) - set(SAMPLING_DEFAULTS) - {"batch_size", "learning_rate"})
    if unknown:
        raise ValueError(f"unknown adaptive sampling parameter(s) {unknown}; valid: "
                         f"{', '.join(SAMPLING_DEFAULTS)}, batch_size, learning_rate")
    out = {**SAMPLING_DEFAULTS, "batch_size": profile.surrogate_recipe.batch_size,
           "learning_rate": profile.surrogate_recipe.lr, **sampling}
    if out["hierarchy"] not in HIERARCHIES:
        raise ValueError(f"hierarchy {out['hierarchy']!r}: the adaptive attacker samples over 'wordnet' (WordNet "
                         "above the pool's ImageNet classes) or 'flat' (every pool class a child of the root)")
    return out
