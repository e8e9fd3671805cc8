"""Stage 7a: a Hub-ready folder with a model card generated from the run's artifacts (docs/deploy.md)."""
