"""Training students: data from a store, objectives, the loop, checkpoints."""
