"""``retort judge``: a third model (typically the teacher) compares the answers of two models.

The tree follows the work: ``templates`` (the judge prompts users may replace), ``backends``
(local or served chat models that answer and judge), ``verdicts`` (reading ``[[A]]`` and
friends out of a judge's reply), ``journal`` (append-only JSONL, resumed exactly once per
key), ``stats`` (the two-order rule and Wilson intervals), ``run`` (the work) and ``summary``
(``judge.json``). See docs/judge.md.
"""
