"""Representation metrics: clustering, reconstruction quality and disentanglement of latents."""
