"""retort guard: an OpenAI-compatible gateway with keys, limits, extraction controls and an
audit log, in front of any OpenAI-compatible upstream."""
