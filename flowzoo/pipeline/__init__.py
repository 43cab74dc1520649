"""From a resolved config to a run directory: train, sample, evaluate, record (what `flowzoo run` does)."""
