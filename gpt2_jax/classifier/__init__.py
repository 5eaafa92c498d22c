"""A trained classifier: load it, predict, export it to transformers."""
