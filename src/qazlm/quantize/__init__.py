"""Stage 7a: quantized model folders through torchao (docs/deploy.md)."""
