"""Likelihood metrics: exact, bounded and estimated log-likelihoods of held-out images."""
