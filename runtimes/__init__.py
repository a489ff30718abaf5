"""Runtimes: one module per backend, one interface (:class:`~edgevit.runtimes.base.Runtime`)."""
