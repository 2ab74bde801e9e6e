# The numpy/TensorFlow maths of the ADM evaluator, transcribed into numpy for the tests.
#
# Source: openai/guided-diffusion, evaluations/evaluator.py
# (commit 22e0df8183507e13a7813f8d38d51b072ca1e67c):
# ``Evaluator.compute_inception_score``, ``Evaluator.compute_prec_recall``,
# ``ManifoldEstimator`` and ``DistanceBlock`` with ``_batch_pairwise_distances``.
#
# MIT License
#
# Copyright (c) 2021 OpenAI
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.
"""The ADM evaluator's Inception Score and precision/recall, TensorFlow ops written in numpy.

What each TensorFlow op of the original becomes here:

* ``_create_softmax_graph``: ``tf.nn.softmax(tf.matmul(pool3, W))`` with ``W`` the weight of
  the graph's ``softmax/logits/MatMul`` (2048 × 1008, no bias). The tests feed the logits
  ``pool3 · W`` directly (:func:`softmax`), in float32 as the graph computes them, or in
  float64 (``dtype``) to compare the maths without float32 round-off.
* ``_batch_pairwise_distances`` on float16 inputs (``tf.cast(U, tf.float16)``): every op's
  output is float16, rounded to nearest even; ``tf.square`` is elementwise; ``tf.matmul`` of
  halves on a GPU multiplies exactly and accumulates in float32 (cuBLAS with float32 compute,
  TensorFlow's default), rounding once to float16; ``tf.reduce_sum`` of the squares adds in
  float16, in the order of TensorFlow's GPU reduction kernel (:func:`_gpu_row_sum_float16`).
  ``norm_u - 2 * M + norm_v`` is evaluated left to right, each op rounded to float16, then
  ``tf.maximum(·, 0)``.
* ``DistanceBlock``: the float16 block is used when all its entries are finite
  (``tf.reduce_all(tf.math.is_finite(...))``), else the same formula in float32.
* ``ManifoldEstimator.manifold_radii``: the squared distance to the ``k``-th neighbour is the
  entry ``k`` (0-based) of each row sorted ascending, the point itself included (its own
  distance is near, not always exactly, 0); blocks of 10 000 rows × 10 000 columns.
  ``np.partition`` over a thread pool is replaced by one ``np.partition``: the same values.
* ``evaluate_pr``: ``dist <= radius`` (closed balls), reference rows × sample columns.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``tf.nn.softmax``: ``exp(x − max x) / Σ exp(x − max x)`` per row, in ``dtype``."""
    x = np.asarray(logits, dtype=dtype)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compute_inception_score(
    logits: np.ndarray,
    split_size: int = 5000,
    softmax_batch_size: int = 512,
    dtype: type = np.float32,
) -> float:
    """``Evaluator.compute_inception_score``, with the softmax graph fed logits."""
    softmax_out = []
    for i in range(0, len(logits), softmax_batch_size):
        softmax_out.append(softmax(logits[i : i + softmax_batch_size], dtype))
    preds = np.concatenate(softmax_out, axis=0)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i : i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        kl = np.mean(np.sum(kl, 1))
        scores.append(np.exp(kl))
    return float(np.mean(scores))


def _gpu_row_sum_float16(sq: np.ndarray) -> np.ndarray:
    """TensorFlow's GPU ``reduce_sum(·, 1)`` of a float16 matrix, every addition in float16.

    ``ReduceFunctor<GPUDevice, SumReducer<half>>`` reduces with ``Sum<half>`` (no float
    accumulator, unlike its ``MeanReducer<half>``). Rows of at least 1024 columns go to CUB's
    ``DeviceSegmentedReduce``, one block of 256 threads per row: below one tile (256 × 20 or
    more items), thread ``t`` adds items ``t, t + 256, …`` in turn, each warp then adds its 32
    lanes as a tree of adjacent pairs (shuffle offsets 1, 2, 4, 8, 16) and thread 0 adds the
    8 warp totals in order. Shorter rows go to ``RowReduceKernel``: one warp per row, lane
    ``l`` adding items ``l, l + 32, …``, then the same warp tree. Zero padding stands for the
    lanes that hold no item (``x + 0 = x`` exactly).
    """
    n, d = sq.shape
    threads = 256 if d >= 1024 else 32
    padded = np.zeros((n, -(-d // threads) * threads), dtype=np.float16)
    padded[:, :d] = sq
    parts = padded.reshape(n, -1, threads)
    acc = parts[:, 0].copy()
    for i in range(1, parts.shape[1]):
        acc = acc + parts[:, i]
    warps = acc.reshape(n, -1, 32)
    while warps.shape[2] > 1:
        warps = warps[:, :, 0::2] + warps[:, :, 1::2]
    out = warps[:, 0, 0]
    for w in range(1, warps.shape[1]):
        out = out + warps[:, w, 0]
    return out


def _reduce_sum_squares(x: np.ndarray) -> np.ndarray:
    """``tf.reduce_sum(tf.square(x), 1)``: squares in x's type; float16 rows summed in float16
    in the order of TensorFlow's GPU kernel (:func:`_gpu_row_sum_float16`)."""
    sq = np.square(x)
    if x.dtype == np.float16:
        return _gpu_row_sum_float16(sq)
    return sq.sum(axis=1)


def _matmul_t(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``tf.matmul(U, V, False, True)``: float16 products exact, accumulated in float32."""
    if u.dtype == np.float16:
        return (u.astype(np.float32) @ v.astype(np.float32).T).astype(np.float16)
    return u @ v.T


def batch_pairwise_distances(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``_batch_pairwise_distances``: squared distances, in the inputs' type."""
    with np.errstate(over="ignore", invalid="ignore"):
        norm_u = _reduce_sum_squares(u).reshape(-1, 1)
        norm_v = _reduce_sum_squares(v).reshape(1, -1)
        d = norm_u - 2 * _matmul_t(u, v) + norm_v
        return np.maximum(d, d.dtype.type(0.0))


class DistanceBlock:
    """``DistanceBlock``: float16 distances, float32 when any entry of the block is not
    finite."""

    def pairwise_distances(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Squared distances (len(u), len(v)) as float32."""
        with np.errstate(over="ignore"):
            block16 = batch_pairwise_distances(u.astype(np.float16), v.astype(np.float16))
        if np.all(np.isfinite(block16)):
            return block16.astype(np.float32)
        return batch_pairwise_distances(u.astype(np.float32), v.astype(np.float32))

    def less_thans(
        self, batch_1: np.ndarray, radii_1: np.ndarray, batch_2: np.ndarray, radii_2: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(batch_1 in some ball of batch_2, batch_2 in some ball of batch_1)``."""
        dist32 = self.pairwise_distances(batch_1, batch_2)[..., None]
        batch_1_in = np.any(dist32 <= radii_2, axis=1)
        batch_2_in = np.any(dist32 <= radii_1[:, None], axis=0)
        return batch_1_in, batch_2_in


class ManifoldEstimator:
    """``ManifoldEstimator`` with its defaults: k = 3, blocks of 10 000."""

    def __init__(
        self,
        row_batch_size: int = 10000,
        col_batch_size: int = 10000,
        nhood_sizes: tuple[int, ...] = (3,),
        clamp_to_percentile: float | None = None,
    ) -> None:
        self.distance_block = DistanceBlock()
        self.row_batch_size = row_batch_size
        self.col_batch_size = col_batch_size
        self.nhood_sizes = list(nhood_sizes)
        self.num_nhoods = len(nhood_sizes)
        self.clamp_to_percentile = clamp_to_percentile

    def manifold_radii(self, features: np.ndarray) -> np.ndarray:
        """Squared k-th neighbour distances (n, num_nhoods), the point itself counted."""
        num_images = len(features)
        radii = np.zeros([num_images, self.num_nhoods], dtype=np.float32)
        distance_batch = np.zeros([self.row_batch_size, num_images], dtype=np.float32)
        seq = np.arange(max(self.nhood_sizes) + 1, dtype=np.int32)
        for begin1 in range(0, num_images, self.row_batch_size):
            end1 = min(begin1 + self.row_batch_size, num_images)
            row_batch = features[begin1:end1]
            for begin2 in range(0, num_images, self.col_batch_size):
                end2 = min(begin2 + self.col_batch_size, num_images)
                col_batch = features[begin2:end2]
                distance_batch[0 : end1 - begin1, begin2:end2] = (
                    self.distance_block.pairwise_distances(row_batch, col_batch)
                )
            part = np.partition(distance_batch[0 : end1 - begin1, :], seq, axis=1)
            radii[begin1:end1, :] = part[:, self.nhood_sizes]
        if self.clamp_to_percentile is not None:
            max_distances = np.percentile(radii, self.clamp_to_percentile, axis=0)
            radii[radii > max_distances] = 0
        return radii

    def evaluate_pr(
        self,
        features_1: np.ndarray,
        radii_1: np.ndarray,
        features_2: np.ndarray,
        radii_2: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(precision, recall)`` arrays over the neighbourhood sizes; features_1 is the
        reference."""
        features_1_status = np.zeros([len(features_1), radii_2.shape[1]], dtype=bool)
        features_2_status = np.zeros([len(features_2), radii_1.shape[1]], dtype=bool)
        for begin_1 in range(0, len(features_1), self.row_batch_size):
            end_1 = begin_1 + self.row_batch_size
            batch_1 = features_1[begin_1:end_1]
            for begin_2 in range(0, len(features_2), self.col_batch_size):
                end_2 = begin_2 + self.col_batch_size
                batch_2 = features_2[begin_2:end_2]
                batch_1_in, batch_2_in = self.distance_block.less_thans(
                    batch_1, radii_1[begin_1:end_1], batch_2, radii_2[begin_2:end_2]
                )
                features_1_status[begin_1:end_1] |= batch_1_in
                features_2_status[begin_2:end_2] |= batch_2_in
        return (
            np.mean(features_2_status.astype(np.float64), axis=0),
            np.mean(features_1_status.astype(np.float64), axis=0),
        )


def compute_prec_recall(
    activations_ref: np.ndarray,
    activations_sample: np.ndarray,
    estimator: ManifoldEstimator | None = None,
) -> tuple[float, float]:
    """``Evaluator.compute_prec_recall``: (precision, recall) of the samples."""
    estimator = estimator or ManifoldEstimator()
    radii_1 = estimator.manifold_radii(activations_ref)
    radii_2 = estimator.manifold_radii(activations_sample)
    pr = estimator.evaluate_pr(activations_ref, radii_1, activations_sample, radii_2)
    return (float(pr[0][0]), float(pr[1][0]))
