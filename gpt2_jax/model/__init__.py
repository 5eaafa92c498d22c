"""GPT-2 itself: sizes, the Flax module, pooling, generation."""
