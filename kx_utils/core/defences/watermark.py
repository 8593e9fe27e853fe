"""DAWN (Szyller et al., "DAWN: Dynamic Adversarial Watermarking of Neural Networks", ACM MM 2021): the API
watermarks whoever extracts it by answering a keyed share of the queries wrongly.

A keyed hash of each query (HMAC-SHA256 of its bytes under the defender's secret key) decides, alone, whether
the query is watermarked: the first 8 bytes read as a number in [0, 1) below the rate ``r``.  A watermarked
query gets a wrong class, also drawn from the hash (one of the K - 1 classes other than the victim's top-1), so
the same query always gets the same answer and no one without the key can tell which answers are wrong.
For probability answers the top-1 probability is swapped with the wrong class's, so the wrong class is the
argmax and the vector keeps its values (the DAWN paper returns labels; the swap is kx's extension to vectors).

A surrogate trained on those answers learns the wrong labels too.  Verification asks a suspect model for the
watermarked queries and measures its agreement with the wrong classes; a model trained without them agrees only
by chance (about 1 / (K - 1)), measured on an independently trained model as the false-positive baseline.
"""

from __future__ import annotations

import hashlib
import hmac

import torch


class Dawn:
    """``Dawn(key, rate)``: which queries are watermarked, their wrong classes, the watermarked answers, and a
    suspect's agreement with them."""

    def __init__(self, key: bytes, rate: float = 0.005):
        self.key = key
        self.rate = rate

    def _digests(self, queries: torch.Tensor) -> list[bytes]:
        if not isinstance(self.key, bytes) or not self.key:
            raise ValueError("DAWN needs a non-empty secret key (bytes)")
        if not 0 < self.rate < 1:
            raise ValueError(f"DAWN's watermarking rate must be in (0, 1), got {self.rate}")
        return [hmac.new(self.key, q.detach().cpu().contiguous().numpy().tobytes(), hashlib.sha256).digest()
                for q in queries]

    def selected(self, queries: torch.Tensor) -> torch.Tensor:
        """Mask of the queries the key watermarks (each decided from its own bytes alone)."""
        return torch.tensor([int.from_bytes(d[:8], "big") / 2**64 < self.rate for d in self._digests(queries)],
                            dtype=torch.bool)

    def wrong_classes(self, queries: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
        """For each query, a class other than ``predicted``, drawn from the hash's next 8 bytes."""
        if num_classes < 2:
            raise ValueError("a watermark needs at least two classes")
        offsets = [1 + int.from_bytes(d[8:16], "big") % (num_classes - 1) for d in self._digests(queries)]
        return (predicted.cpu() + torch.tensor(offsets)) % num_classes

    def answers(self, queries: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(answers, watermarked)``: ``probs`` with each watermarked row's top-1 probability swapped with its
        wrong class's, and the mask of those rows."""
        mask = self.selected(queries)
        out = probs.clone()
        if mask.any():
            rows = mask.nonzero().squeeze(1)
            top = probs[rows].argmax(1)
            wrong = self.wrong_classes(queries[rows], top, probs.shape[1]).to(probs.device)
            top_values, wrong_values = out[rows, top].clone(), out[rows, wrong].clone()
            out[rows, top], out[rows, wrong] = wrong_values, top_values
        return out, mask

    def __call__(self, probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The API's answer transform: ``probs`` with the watermarked rows' classes swapped."""
        return self.answers(images, probs)[0]

    @staticmethod
    def agreement(suspect_predictions: torch.Tensor, watermark_classes: torch.Tensor) -> float:
        """The share of watermarked queries on which a suspect predicts the watermark's wrong class."""
        if not len(watermark_classes):
            raise ValueError("no watermarked query to verify on: raise the rate or send more queries")
        return float((suspect_predictions.cpu() == watermark_classes.cpu()).double().mean())

    def describe(self) -> dict:
        # a digest, not the key: the settings name which key watermarked without revealing it
        return {"defence": "dawn", "rate": self.rate, "key_sha256": hashlib.sha256(self.key).hexdigest()[:16]}
