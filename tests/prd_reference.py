# coding=utf-8
# ruff: noqa: UP009, UP031 (the reference's own code, kept as written)
# Transcribed for geneval's tests from msmsajjadi/precision-recall-distributions,
# prd_score.py, itself taken from
# https://github.com/google/compare_gan/blob/master/compare_gan/src/prd_score.py
#
# Changes made for the tests (the maths is unchanged):
#   - the k-means clustering, unseeded upstream, takes ``random_state``: run ``i`` of
#     ``compute_prd_from_embedding`` uses ``random_state = seed + i``;
#   - ``plot`` (matplotlib) and the ``__future__`` imports are left out;
#   - formatted for this repository's linter.
#
# Copyright 2018 Google LLC & Hwalsuk Lee.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Precision and recall for distributions (Sajjadi et al. 2018), the reference code."""

import numpy as np
import sklearn.cluster


def compute_prd(eval_dist, ref_dist, num_angles=1001, epsilon=1e-10):
    """PRD curve of the discrete distribution eval_dist against ref_dist."""
    if not (epsilon > 0 and epsilon < 0.1):
        raise ValueError("epsilon must be in (0, 0.1] but is %s." % str(epsilon))
    if not (num_angles >= 3 and num_angles <= 1e6):
        raise ValueError("num_angles must be in [3, 1e6] but is %d." % num_angles)

    # Compute slopes for linearly spaced angles between [0, pi/2]
    angles = np.linspace(epsilon, np.pi / 2 - epsilon, num=num_angles)
    slopes = np.tan(angles)

    # Broadcast slopes so that second dimension will be states of the distribution
    slopes_2d = np.expand_dims(slopes, 1)

    # Broadcast distributions so that first dimension represents the angles
    ref_dist_2d = np.expand_dims(ref_dist, 0)
    eval_dist_2d = np.expand_dims(eval_dist, 0)

    # Compute precision and recall for all angles in one step via broadcasting
    precision = np.minimum(ref_dist_2d * slopes_2d, eval_dist_2d).sum(axis=1)
    recall = precision / slopes

    # handle numerical instabilities leaing to precision/recall just above 1
    max_val = max(np.max(precision), np.max(recall))
    if max_val > 1.001:
        raise ValueError("Detected value > 1.001, this should not happen.")
    precision = np.clip(precision, 0, 1)
    recall = np.clip(recall, 0, 1)

    return precision, recall


def _cluster_into_bins(eval_data, ref_data, num_clusters, random_state):
    """Clusters the union of the data points and returns the cluster distribution."""
    cluster_data = np.vstack([eval_data, ref_data])
    kmeans = sklearn.cluster.MiniBatchKMeans(
        n_clusters=num_clusters, n_init=10, random_state=random_state
    )
    labels = kmeans.fit(cluster_data).labels_

    eval_labels = labels[: len(eval_data)]
    ref_labels = labels[len(eval_data) :]

    eval_bins = np.histogram(eval_labels, bins=num_clusters, range=[0, num_clusters], density=True)[
        0
    ]
    ref_bins = np.histogram(ref_labels, bins=num_clusters, range=[0, num_clusters], density=True)[0]
    return eval_bins, ref_bins


def compute_prd_from_embedding(
    eval_data,
    ref_data,
    num_clusters=20,
    num_angles=1001,
    num_runs=10,
    enforce_balance=True,
    seed=0,
):
    """Computes PRD data from sample embeddings (run ``i`` clusters with ``seed + i``)."""
    if enforce_balance and len(eval_data) != len(ref_data):
        raise ValueError(
            "The number of points in eval_data %d is not equal to the number of "
            "points in ref_data %d. To disable this exception, set enforce_balance "
            "to False (not recommended)." % (len(eval_data), len(ref_data))
        )

    eval_data = np.array(eval_data, dtype=np.float64)
    ref_data = np.array(ref_data, dtype=np.float64)
    precisions = []
    recalls = []
    for i in range(num_runs):
        eval_dist, ref_dist = _cluster_into_bins(eval_data, ref_data, num_clusters, seed + i)
        precision, recall = compute_prd(eval_dist, ref_dist, num_angles)
        precisions.append(precision)
        recalls.append(recall)
    precision = np.mean(precisions, axis=0)
    recall = np.mean(recalls, axis=0)
    return precision, recall


def _prd_to_f_beta(precision, recall, beta=1, epsilon=1e-10):
    """F_beta = (1 + beta^2) * (p * r) / ((beta^2 * p) + r) of every pair."""
    if not ((precision >= 0).all() and (precision <= 1).all()):
        raise ValueError("All values in precision must be in [0, 1].")
    if not ((recall >= 0).all() and (recall <= 1).all()):
        raise ValueError("All values in recall must be in [0, 1].")
    if beta <= 0:
        raise ValueError("Given parameter beta %s must be positive." % str(beta))

    return (1 + beta**2) * (precision * recall) / ((beta**2 * precision) + recall + epsilon)


def prd_to_max_f_beta_pair(precision, recall, beta=8):
    """Max. F_beta and max. F_{1/beta} over the precision/recall pairs."""
    if not ((precision >= 0).all() and (precision <= 1).all()):
        raise ValueError("All values in precision must be in [0, 1].")
    if not ((recall >= 0).all() and (recall <= 1).all()):
        raise ValueError("All values in recall must be in [0, 1].")
    if beta <= 0:
        raise ValueError("Given parameter beta %s must be positive." % str(beta))

    f_beta = np.max(_prd_to_f_beta(precision, recall, beta))
    f_beta_inv = np.max(_prd_to_f_beta(precision, recall, 1 / beta))
    return f_beta, f_beta_inv
