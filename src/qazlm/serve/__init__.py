"""OpenAI-compatible serving over the continuous batcher (docs/serve.md)."""
