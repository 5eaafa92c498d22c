"""Training a classifier: what trains, the jitted step, the frozen prefix, checkpoints."""
