"""The experiments layer, the only one that reads a :class:`~kx_utils.config.schema.Profile` and an
:class:`~kx_utils.runtime.artifacts.ArtifactStore`: the victims, the Knockoff attack with its cache, Section 4's
detection experiments, Section 5's, and the registry that declares every experiment once
(:mod:`~kx_utils.experiments.registry`)."""
