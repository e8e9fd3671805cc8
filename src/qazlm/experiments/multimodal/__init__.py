"""Stage 8 experiment: images and speech into the trilingual model (docs/multimodal.md)."""
