"""Whether a shipped statistics file is current, judged as a user would see it.

Float32 network outputs differ across CPUs and torch builds by about 1e-4 relative (other
kernels, other summation orders), so a recomputed feature set never equals the shipped one
bit for bit. What a user sees is the FID against the shipped statistics, reported to four
decimals, and the per-image features KID reads. So a shipped file is current when

* the FID between the shipped moments and the recomputed ones is at most
  :data:`FID_TOLERANCE` = 1e-4: below the last decimal a report shows, and 25× above what
  a 1e-4 relative perturbation of every feature moves it (≤ 4e-6 on the three digits splits);
* every feature is within :data:`FEATURE_TOLERANCE` = 2e-3 of the features' largest
  magnitude: 6× above what that perturbation moves them (3.3e-4), while a stale file
  (other weights, another convention) is off by orders of magnitude more.

``tests/test_digits_cnn.py`` checks that a 1e-4 relative perturbation passes these bounds
and a 1e-2 one does not.
"""

from __future__ import annotations

import numpy as np

from geneval.feature_stats import FeatureStatistics, StatsFile
from geneval_plugins.metrics.sample_quality.fid import frechet_distance

FID_TOLERANCE = 1e-4
FEATURE_TOLERANCE = 2e-3


def assert_stats_current(shipped: StatsFile, features: np.ndarray) -> None:
    """Fail unless ``shipped`` holds the statistics (and features) of ``features`` (n, d)."""
    features = np.asarray(features, dtype=np.float64)
    assert shipped.n == features.shape[0]
    assert shipped.mu.shape == (features.shape[1],)
    recomputed = FeatureStatistics.from_features(features)
    fid = frechet_distance(recomputed.mean, recomputed.cov, shipped.mu, shipped.sigma)
    assert abs(fid) <= FID_TOLERANCE, f"FID between shipped and recomputed statistics: {fid:.3g}"
    if shipped.features is not None:
        scale = float(np.abs(features).max())
        worst = float(np.abs(shipped.features - features).max())
        assert worst <= FEATURE_TOLERANCE * scale, (
            f"shipped features differ by {worst:.3g} (scale {scale:.3g})"
        )
