"""The extraction detector: features of a key's traffic that tell distillation campaigns from
ordinary use, scores with reasons, clusters of keys acting together, and the simulator that
measures it all.

The same per-key state serves both uses: ``retort guard scan`` feeds a log through it, the
gateway feeds it live requests (see ``online``). Feature families live one to a module under
``features/``; each maintains its window aggregates incrementally (``add``/``evict``).
"""
