"""Instruction tuning: `qazlm sft-data` builds chat instruction data (docs/sft.md)."""
