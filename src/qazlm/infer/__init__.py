"""The inference engine: load a model folder (ours or Hugging Face), score text (bits per byte), generate.

One engine for everything that runs a trained model — training samples, evaluation, `qazlm generate`, and
the chat/serving stages to come: `loading` (model + tokenizer from a folder), `scoring` (log-likelihoods,
bits per byte), `sampling` (how the next token is picked), `engine` (batched generation with a KV cache,
stop strings, streaming) and `chat` (the chat template).
"""
