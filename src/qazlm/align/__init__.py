"""Stage 6: preference alignment — preference pairs, reward model, DPO (docs/alignment.md)."""
