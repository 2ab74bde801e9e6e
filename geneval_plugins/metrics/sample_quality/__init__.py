"""Sample-quality metrics: distances between sample and reference feature distributions."""
