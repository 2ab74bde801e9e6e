"""Memorisation and novelty metrics: how close the samples sit to the training set.

The reference stands for the model's training set. ``authpct`` (Alaa et al. 2022), ``ct``
(Meehan et al. 2020), ``fls`` (Jiralerspong et al. 2023, as dgm-eval computes it) and
``mifid`` (Bai et al. 2021, as torchmetrics computes it) compare the samples' features with
it; ``ct`` and ``fls`` also hold out a seeded test part of it.
"""
