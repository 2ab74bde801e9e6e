# Copyright 2024 The Google Research Authors.
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
"""A numpy transcription of google-research/cmmd ``distance.py`` (the JAX original).

Transcribed from ``cmmd/distance.py`` of github.com/google-research/google-research (commit
4c4299485319ed72ef782020c81784be5468924e): the same statements with ``jax.numpy`` replaced
by ``numpy`` and ``@jax.jit`` dropped. numpy keeps the inputs' type, so float64 embeddings
are computed in float64 (JAX, without ``jax_enable_x64``, computes in float32). The
embeddings are expected L2-normalised: the reference normalises them in its embedding code
(scenic's ``CLIP.encode_image(normalize=True)``; ``x /= ‖x‖`` in the PyTorch port
sayakpaul/cmmd-pytorch ``embedding.py``), not here. Full n × n kernel matrices: used by the
tests and ``bench/bench_cmmd.py`` as the reference only.
"""

import numpy as np

# The bandwidth parameter for the Gaussian RBF kernel. See the paper for more
# details.
_SIGMA = 10
# The following is used to make the metric more human readable. See the paper
# for more details.
_SCALE = 1000


def mmd(x, y):  # noqa: ANN001, ANN201 - transcribed signature
    """A memory-inefficient MMD implementation in numpy (transcribed from JAX).

    This implements the minimum-variance/biased version of the estimator described
    in Eq.(5) of
    https://jmlr.csail.mit.edu/papers/volume13/gretton12a/gretton12a.pdf.
    As described in Lemma 6's proof in that paper, the unbiased estimate and the
    minimum-variance estimate for MMD are almost identical.

    Args:
      x: The first set of embeddings of shape (n, embedding_dim).
      y: The second set of embeddings of shape (n, embedding_dim).

    Returns:
      The MMD distance between x and y embedding sets.
    """
    x = np.asarray(x)
    y = np.asarray(y)

    # np.matmul(x, x.T) etc. are not cached to avoid OOM when x has many rows.
    x_sqnorms = np.diag(np.matmul(x, x.T))
    y_sqnorms = np.diag(np.matmul(y, y.T))

    gamma = 1 / (2 * _SIGMA**2)
    k_xx = np.mean(
        np.exp(
            -gamma
            * (-2 * np.matmul(x, x.T) + np.expand_dims(x_sqnorms, 1) + np.expand_dims(x_sqnorms, 0))
        )
    )
    k_xy = np.mean(
        np.exp(
            -gamma
            * (-2 * np.matmul(x, y.T) + np.expand_dims(x_sqnorms, 1) + np.expand_dims(y_sqnorms, 0))
        )
    )
    k_yy = np.mean(
        np.exp(
            -gamma
            * (-2 * np.matmul(y, y.T) + np.expand_dims(y_sqnorms, 1) + np.expand_dims(y_sqnorms, 0))
        )
    )

    return _SCALE * (k_xx + k_yy - 2 * k_xy)
