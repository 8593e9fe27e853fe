"""The algorithm layer: models, training (:class:`~kx_utils.core.recipe.Recipe`), the prediction API and its
answer formats, and the detectors of Knockoff queries.

Everything here takes tensors and settings objects and returns tensors and results; nothing imports a
profile, an artifact cache or the orchestration (``tests/test_layers.py`` checks it).
"""
