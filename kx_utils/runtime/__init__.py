"""The runtime every layer may use: the artifact cache and its integrity checks, locks, progress lines and the
process-wide switches (:mod:`~kx_utils.runtime.regime`)."""
