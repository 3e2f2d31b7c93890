"""Teachers: the models whose outputs students learn from (local now; HTTP servers later)."""
