"""Capture: prompts in, teacher outputs out, into a resumable store."""
