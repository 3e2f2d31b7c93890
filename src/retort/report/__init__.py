"""``retort report``: run folders, eval.json and judge.json files into one HTML page."""
