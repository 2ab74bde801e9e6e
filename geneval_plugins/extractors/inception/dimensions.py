"""Output sizes of the FID Inception network, importable without torch (the extractor declares
them when it registers; :mod:`geneval_plugins.extractors.inception.network` builds them)."""

#: Dimension of the 2048-d pool3 features.
POOL_DIM = 2048
#: Number of classes of the 2015 TensorFlow graph (1000 ImageNet classes plus 8 unused).
NUM_CLASSES = 1008
#: Channels of ``mixed_6/conv:0`` (``Mixed_6d.branch1x1``) the ADM evaluator keeps for sFID.
SPATIAL_CHANNELS = 7
#: Side of the 17×17 grid of the ``Mixed_6*`` blocks at 299×299 input.
SPATIAL_GRID = 17
#: Dimension of the sFID spatial features: 7 × 17 × 17.
SPATIAL_DIM = SPATIAL_CHANNELS * SPATIAL_GRID * SPATIAL_GRID
