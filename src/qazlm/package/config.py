"""`[package]` table / `qazlm package` settings (docs/deploy.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qazlm.errors import QazlmError

LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")  # the Hub's licence identifiers: apache-2.0, mit, cc-by-4.0, other


@dataclass
class PackageConfig:
    model: str = ""                 # the model folder to ship (ours, SFT, quantized: any that transformers loads)
    out_dir: str = "runs/package"
    run: str = ""                   # the run folder with the reports; "": found from the model's lineage
    license: str = "apache-2.0"     # the Hub licence id of the model weights
    repo_id: str = ""               # e.g. "my-org/qazlm-tiny-chat": used in the card's usage snippets
    gguf: list[str] = field(default_factory=list)  # GGUF files to ship beside the weights

    def __post_init__(self):
        if not self.model:
            raise QazlmError("[package] model: not set; give the model folder to package (qazlm package MODEL -o DIR)")
        if not LICENSE_ID.match(self.license):
            raise QazlmError(f"[package] license = {self.license!r}: use a Hub licence id such as apache-2.0, mit, "
                             "cc-by-4.0 or other")
        if self.repo_id and not re.match(r"^[\w.\-]+/[\w.\-]+$", self.repo_id):
            raise QazlmError(f"[package] repo_id = {self.repo_id!r}: expected OWNER/NAME, e.g. my-org/qazlm-tiny")
