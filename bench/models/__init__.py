"""Models: the contract every model meets (:mod:`~bench.models.base`), one module per framework
(:mod:`~bench.models.smp`) and test-time adapters. Imports :mod:`bench.core` only."""
