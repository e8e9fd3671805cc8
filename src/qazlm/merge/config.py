"""`qazlm merge` settings: one validated dataclass (docs/merge.md)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

from qazlm.errors import QazlmError

# mergekit method -> what the merged weights are (w: the --weights, normalized to sum 1 for linear)
METHODS = {
    "linear": "sum of w_i * model_i: a model soup (Wortsman et al. 2022); the weights are normalized to sum 1",
    "task_arithmetic": "base + sum of w_i * (model_i - base): task vectors (Ilharco et al. 2023); needs --base",
}


@dataclass
class MergeConfig:
    models: list[str] = field(default_factory=list)   # model folders fine-tuned from one parent (same shapes/vocab)
    weights: list[float] = field(default_factory=list)  # one per model; empty: equal weights
    method: str = "linear"
    base: str = ""                  # the common parent: task_arithmetic adds the others' differences to it
    out_dir: str = "runs/merged"

    def __post_init__(self):
        if len(self.models) < 2:
            raise QazlmError(f"merge: {len(self.models)} model folder(s) given; give at least two to merge")
        if self.method not in METHODS:
            close = difflib.get_close_matches(self.method, METHODS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise QazlmError(f"merge: --method {self.method!r}: {hint}choose from {', '.join(METHODS)}")
        if self.weights and len(self.weights) != len(self.models):
            raise QazlmError(f"merge: --weights has {len(self.weights)} values for {len(self.models)} models; "
                             "give one weight per model, in the same order")
        for w in self.weights:
            if not math.isfinite(w) or w <= 0:
                raise QazlmError(f"merge: --weights value {w!r}: each weight must be a finite number > 0")
        if self.method == "task_arithmetic" and not self.base:
            raise QazlmError("merge: --method task_arithmetic needs --base, the folder the models were fine-tuned from")
        if self.method == "linear" and self.base:
            raise QazlmError("merge: --base is only used by --method task_arithmetic; drop it for a linear merge")

    def folders(self) -> list[str]:
        """Every input folder: the models, then the base when there is one."""
        return [*self.models, *([self.base] if self.base else [])]

    def model_weights(self) -> list[float]:
        """The weights as mergekit applies them: normalized to sum 1 for linear, as given otherwise."""
        weights = self.weights or [1.0] * len(self.models)
        total = sum(weights) if self.method == "linear" else 1.0
        return [w / total for w in weights]
