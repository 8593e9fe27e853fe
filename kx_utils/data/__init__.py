"""The data: the datasets and their stand-ins (:mod:`~kx_utils.data.datasets`), image-folder decoding, the
audited ImageNet-overlap lists, and the commands that fetch or build the data (:mod:`~kx_utils.data.fetch`)."""
