"""``python -m kx_utils bench``: training and inference throughput of a profile's models, and its report."""
