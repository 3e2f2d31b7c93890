"""``retort quickstart``: the whole pipeline on the embedded teacher, with a built-in prompt set."""
