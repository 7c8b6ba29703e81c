"""Core: the registry, errors, configuration reading, the training recipe, label spaces, metrics and
results on disk. Imports nothing from the rest of the package, and no torch."""
