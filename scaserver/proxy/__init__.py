"""The stateful forking proxy (RFC 3261 section 16): a pure engine driven by the dispatcher.

:mod:`.target` (target set and q-value ordering), :mod:`.routing` (request and
response preparation), :mod:`.proxy` (the engine and its response contexts),
:mod:`.events` (facts published for SCA, reporting and parking).
"""
