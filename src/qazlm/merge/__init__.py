"""`qazlm merge`: model soups and task arithmetic through mergekit (docs/merge.md)."""
