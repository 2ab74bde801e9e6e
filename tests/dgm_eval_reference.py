"""dgm-eval's memorisation metrics, transcribed for the tests (MIT licence).

Source: layer6ai-labs/dgm-eval, commit d57a6d2d6bd613332dd21696994afff8efa78575,
``dgm_eval/metrics/authpct.py``, ``ct.py`` and ``fls.py`` (Stein et al. 2023; ``authpct`` and
``fls`` from marcojira/fls, ``ct`` from casey-meehan/data-copying). The maths is kept line for
line; only what made them unrunnable here or nondeterministic is changed, each marked
``CHANGED``:

* ``authpct``: a ``dtype`` argument (upstream float32, the default here too);
* ``ct``: the per-cell ``Zu`` is squeezed to a scalar before it is stored; ``KMeans`` gets
  ``random_state`` (upstream unseeded) and ``PCA`` gets ``svd_solver="full"`` (upstream
  ``"auto"`` picks a randomised, unseeded solver for large inputs); the ``print`` calls are
  dropped;
* ``fls``: the tensors go to a ``device``/``dtype`` given as arguments (upstream
  ``.cuda()`` and float32).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors as NN

# ---------------------------------------------------------------------------- authpct.py


def compute_authpct(train_feat, gen_feat, dtype=torch.float32):  # CHANGED: dtype argument
    with torch.no_grad():
        train_feat = torch.tensor(train_feat, dtype=dtype)
        gen_feat = torch.tensor(gen_feat, dtype=dtype)
        real_dists = torch.cdist(train_feat, train_feat)

        # Hacky way to get it to ignore distance to self in nearest neighbor calculation
        real_dists.fill_diagonal_(float("inf"))
        gen_dists = torch.cdist(train_feat, gen_feat)

        real_min_dists = real_dists.min(axis=0)
        gen_min_dists = gen_dists.min(dim=0)

        # For every synthetic point, find its closest real point, d1
        # Then, for that real point, find its closest real point(not itself), d2
        # if d2<d1, then its authentic
        authen = real_min_dists.values[gen_min_dists.indices] < gen_min_dists.values
        authpct = (100 * torch.sum(authen) / len(authen)).item()
    return authpct


# ---------------------------------------------------------------------------- ct.py


def preprcoess_ct(train_feat, test_feat, gen_feat):
    if train_feat.shape[1] > 64:
        pca_xf = PCA(n_components=64, svd_solver="full").fit(train_feat)  # CHANGED: solver

        train_feat = pca_xf.transform(train_feat)
        test_feat = pca_xf.transform(test_feat)
        gen_feat = pca_xf.transform(gen_feat)

        del pca_xf
    return train_feat, test_feat, gen_feat


def Zu(Pn, Qm, T):  # noqa: N802, N803
    m = Qm.shape[0]
    n = Pn.shape[0]

    # fit NN model to training sample to get distances to test and generated samples
    T_NN = NN(n_neighbors=1).fit(T)  # noqa: N806
    LQm, _ = T_NN.kneighbors(X=Qm, n_neighbors=1)  # noqa: N806
    LPn, _ = T_NN.kneighbors(X=Pn, n_neighbors=1)  # noqa: N806

    # Get Mann-Whitney U score and manually Z-score it using the conditions of null hypothesis H_0
    u, _ = mannwhitneyu(LQm, LPn, alternative="less")
    mean = (n * m / 2) - 0.5  # 0.5 is continuity correction
    std = np.sqrt(n * m * (n + m + 1) / 12)
    Z_u = (u - mean) / std  # noqa: N806
    return Z_u


def Zu_cells(Pn, Pn_cells, Qm, Qm_cells, T, T_cells):  # noqa: N802, N803
    # assume cells are labeled 0 to k-1
    k = len(np.unique(Pn_cells))
    Zu_cells = np.zeros(k)  # noqa: N806

    # get samples in each cell and collect Zu
    for i in range(k):
        Pn_cell_i = Pn[Pn_cells == i]  # noqa: N806
        Qm_cell_i = Qm[Qm_cells == i]  # noqa: N806
        T_cell_i = T[T_cells == i]  # noqa: N806
        # check that the cell has test and training samples present
        if len(Pn_cell_i) * len(T_cell_i) == 0:
            raise ValueError(
                f"Cell {i:n} lacks test samples and/or training samples. Consider reducing the "
                "number of cells in partition."
            )

        # if there are no generated samples present, add a 0 for Zu. This cell will be
        # excluded in \Pi_\tau
        if len(Qm_cell_i) > 0:
            # CHANGED: squeeze (upstream assigns a 1-element array, deprecated in numpy)
            Zu_cells[i] = np.squeeze(Zu(Pn_cell_i, Qm_cell_i, T_cell_i))
        else:
            Zu_cells[i] = 0

    return Zu_cells


def C_T(Pn, Pn_cells, Qm, Qm_cells, T, T_cells, tau):  # noqa: N802, N803
    m = Qm.shape[0]
    n = Pn.shape[0]
    k = np.max(np.unique(T_cells)) + 1  # number of cells

    # First, determine which of the cells have sufficient generated samples (Qm(pi) > tau)
    labels, cts = np.unique(Qm_cells, return_counts=True)
    Qm_cts = np.zeros(k)  # noqa: N806
    Qm_cts[labels.astype(int)] = cts  # put in order of cell label
    Qm_of_pi = Qm_cts / m  # noqa: N806
    Pi_tau = Qm_of_pi > tau  # binary array selecting which cells have sufficient samples  # noqa: N806

    # Get the fraction of test samples in each cell Pn(pi)
    labels, cts = np.unique(Pn_cells, return_counts=True)
    Pn_cts = np.zeros(k)  # noqa: N806
    Pn_cts[labels.astype(int)] = cts  # put in order of cell label
    Pn_of_pi = Pn_cts / n  # noqa: N806

    # Now get the in-cell Zu scores
    Zu_scores = Zu_cells(Pn, Pn_cells, Qm, Qm_cells, T, T_cells)  # noqa: N806

    # compute C_T:
    C_T = Pn_of_pi[Pi_tau].dot(Zu_scores[Pi_tau]) / np.sum(Pn_of_pi[Pi_tau])  # noqa: N806

    return C_T


def compute_CTscore(train_feat, test_feat, gen_feat, random_state=0):  # noqa: N802
    train_feat, test_feat, gen_feat = preprcoess_ct(train_feat, test_feat, gen_feat)
    # CHANGED: random_state (upstream unseeded)
    km_clf = KMeans(n_clusters=3, n_init=10, random_state=random_state).fit(train_feat)

    T_labels = km_clf.predict(train_feat)  # noqa: N806
    Pn_labels = km_clf.predict(test_feat)  # noqa: N806
    Qm_labels = km_clf.predict(gen_feat)  # noqa: N806

    C_T_score = C_T(  # noqa: N806
        test_feat,
        Pn_labels,
        gen_feat,
        Qm_labels,
        train_feat,
        T_labels,
        tau=20 / len(gen_feat),
    )

    return C_T_score


# ---------------------------------------------------------------------------- fls.py


def preprocess_fls(train_feat, baseline_feat, test_feat, gen_feat, device, dtype):
    # CHANGED: device and dtype (upstream float32 and .cuda())
    train_feat = torch.tensor(train_feat, dtype=dtype).to(device)
    baseline_feat = torch.tensor(baseline_feat, dtype=dtype).to(device)
    test_feat = torch.tensor(test_feat, dtype=dtype).to(device)
    gen_feat = torch.tensor(gen_feat, dtype=dtype).to(device)

    # Normalize features to 0 mean, unit variance
    all_features = torch.cat((train_feat, baseline_feat, test_feat, gen_feat), dim=0)
    mean = all_features.mean(dim=0)
    std = all_features.std(dim=0)

    def normalize(feat):
        return (feat - mean) / std

    train_feat = normalize(train_feat)
    baseline_feat = normalize(baseline_feat)
    test_feat = normalize(test_feat)
    gen_feat = normalize(gen_feat)
    return train_feat, baseline_feat, test_feat, gen_feat


def compute_dists(x_data, x_kernel):
    """Returns the dists tensor of all L2^2 distances between samples from x_data and x_kernel"""
    dists = (torch.cdist(x_data, x_kernel)) ** 2
    return dists.detach()


def get_pairwise_likelihood(x_data, x_kernel, log_sigmas):
    dists = compute_dists(x_data, x_kernel)
    exponent_term = (-0.5 * dists) / torch.exp(log_sigmas)
    exponent_term -= (x_kernel.shape[1] / 2) * log_sigmas
    exponent_term += torch.log(torch.tensor(1 / dists.shape[1]))
    return exponent_term


def nll(dists, log_sigmas, dim, lambd=0, detailed=False):
    exponent_term = (-0.5 * dists) / torch.exp(log_sigmas)

    # Here we use that dividing by x is equivalent to multiplying by e^{-ln(x)}
    # allows for use of logsumexp
    exponent_term -= (dim / 2) * log_sigmas
    exponent_term += torch.log(torch.tensor(1 / dists.shape[1]))
    inner_term = torch.logsumexp(exponent_term, dim=1)

    total_nll = torch.mean(-inner_term)

    reg_term = lambd / 2 * torch.norm(torch.exp(-log_sigmas)) ** 2
    final_nll = total_nll + reg_term

    if detailed:
        return final_nll, -inner_term

    return final_nll


def optimize_sigmas(x_data, x_kernel, init_val=1):
    losses = []

    # CHANGED: device and dtype of the data (upstream device="cuda", float32)
    log_sigmas = torch.ones(
        x_kernel.shape[0], requires_grad=True, device=x_kernel.device, dtype=x_kernel.dtype
    )
    log_sigmas.data = init_val * log_sigmas

    optim = torch.optim.Adam([log_sigmas], lr=0.5)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=[50], gamma=0.1)

    dim = x_data.shape[1]

    # Precompute dists
    dists = compute_dists(x_data, x_kernel)

    for _ in range(100):
        loss = nll(dists, log_sigmas, dim)

        optim.zero_grad()
        loss.backward()
        optim.step()
        scheduler.step()

        # Here we clamp log_sigmas to stop values exploding for identical samples
        with torch.no_grad():
            log_sigmas.data = log_sigmas.clamp(-100, 20).data

        losses.append(loss.detach().cpu().numpy())

    return log_sigmas, losses


def evaluate_set(evaluated_set, x_kernel, log_sigmas):
    """Gets the NLL of the test set using given kernel/bandwidths"""
    dists = compute_dists(evaluated_set, x_kernel)
    nlls = nll(dists, log_sigmas, x_kernel.shape[1], detailed=True)
    return nlls[0].detach().cpu().numpy(), nlls[1]


def compute_fls(train_feat, baseline_feat, test_feat, gen_feat, device="cpu", dtype=torch.float32):
    train_feat, baseline_feat, test_feat, gen_feat = preprocess_fls(
        train_feat, baseline_feat, test_feat, gen_feat, device, dtype
    )

    gen_log_sigmas, gen_losses = optimize_sigmas(train_feat, gen_feat, init_val=0)

    # Get gen_nll
    gen_nlls = evaluate_set(test_feat, gen_feat, gen_log_sigmas)
    gen_nll = gen_nlls[0].item()

    # Get baseline_nll
    base_log_sigmas, base_losses = optimize_sigmas(train_feat, baseline_feat, init_val=0)
    baseline_nlls = evaluate_set(test_feat, baseline_feat, base_log_sigmas)
    baseline_nll = baseline_nlls[0].item()

    diff = 2 * (gen_nll - baseline_nll) / train_feat.shape[1]
    score = math.e ** (-diff) * 100
    return score


def compute_fls_overfit(
    train_feat, baseline_feat, test_feat, gen_feat, device="cpu", dtype=torch.float32
):
    train_feat, baseline_feat, test_feat, gen_feat = preprocess_fls(
        train_feat, baseline_feat, test_feat, gen_feat, device, dtype
    )

    gen_log_sigmas, gen_losses = optimize_sigmas(train_feat, gen_feat, init_val=0)
    # Ensure both sets have the same amount of data points
    size = min(test_feat.shape[0], train_feat.shape[0])

    train_lls = get_pairwise_likelihood(train_feat[:size], gen_feat, gen_log_sigmas)
    test_lls = get_pairwise_likelihood(test_feat[:size], gen_feat, gen_log_sigmas)

    ll_diff = train_lls.logsumexp(axis=0) - test_lls.logsumexp(axis=0)
    score = ((ll_diff > 0).sum().item() / ll_diff.shape[0]) * 100
    return score - 50
