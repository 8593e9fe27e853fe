"""Defences against model extraction that the paper weighs (§6), as small objects on tensors.

- :mod:`.perturbations` — answer transforms (``(probabilities, images) -> answers``, the API's ``defence``): Lee et al.'s reverse sigmoid, and the
  distortion an honest client sees (L1, KL, top-1 kept); top-k and rounding are the API's own formats
  (:func:`kx_utils.core.api.format_answers`);
- :mod:`.poisoning` — Orekondy et al.'s prediction poisoning (MAD): the answer moved, within an L1 budget, toward
  the vertex of the simplex that turns the attacker's gradient furthest, computed on the defender's own surrogate;
- :mod:`.prada` — Juuti et al.'s PRADA: a per-client stream detector on the minimum distances of new queries to
  that client's earlier ones (Shapiro-Wilk normality test);
- :mod:`.watermark` — Szyller et al.'s DAWN: a keyed hash picks a share of the queries whose answer is
  deliberately wrong, and a suspect model that agrees with those wrong answers is a copy.

Each follows its authors' published code where there is one, and says where it departs from it.  Notebook 07
(beyond the paper) measures them against the Knockoff attacker.
"""

from .perturbations import ReverseSigmoid, distortion, reverse_sigmoid
from .poisoning import MAD, mad_jacobian, mad_perturb, mad_target
from .prada import Prada, prada_stream
from .watermark import Dawn

__all__ = ["MAD", "Dawn", "Prada", "ReverseSigmoid", "distortion", "mad_jacobian", "mad_perturb", "mad_target",
           "prada_stream", "reverse_sigmoid"]
