"""GGUF export for llama.cpp / Ollama (docs/deploy.md)."""
