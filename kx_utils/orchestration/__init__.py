"""Running the experiments: the notebook runner and the plan (:mod:`~kx_utils.orchestration.pipeline`), the grid
of cached tasks and its executors, and the GPU-hours projection; all of them derive from the registry."""
