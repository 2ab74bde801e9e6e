"""Output sizes of the FID Inception network, importable without torch (the extractor declares
them when it registers; :mod:`geneval_plugins.extractors.inception.network` builds them)."""

#: Dimension of the 2048-d pool3 features.
POOL_DIM = 2048
#: Number of classes of the 2015 TensorFlow graph (1000 ImageNet classes plus 8 unused).
NUM_CLASSES = 1008
