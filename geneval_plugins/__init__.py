"""The bundled geneval plugins: metrics, models, extractors and datasets.

They register through the ``geneval`` entry-point group exactly as third-party packages do.
"""
