"""The learning layer every algorithm shares (as Stable-Baselines3's `common/`): MLPs, the
diagonal-Gaussian helpers (log-density, entropy, KL in log-std and in log-variance form), a
Gaussian MLP value function, running mean/variance normalisation, garage's linear feature
baseline and explained variance. Algorithm-specific pieces stay in their own files (PPO's in
`metarl.ppo`); no algorithm imports another.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

LOG_STD_MIN = math.log(1e-6)  # garage's min_std=1e-6 ("exp" parametrisation)


# ----------------------------------------------------------------------------- networks


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class GaussianValueMLP(nn.Module):
    """garage's GaussianMLPValueFunction with `learn_std`: an MLP mean and one learned log-std;
    trained by the negative log-likelihood of the returns, not by squared error."""

    def __init__(self, input_dim: int, hidden: Sequence[int] = (64, 64), init_std: float = 1.0):
        super().__init__()
        self.net = mlp([input_dim, *hidden, 1])
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((1,), math.log(init_std)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)

    def loss(self, x: Tensor, returns: Tensor) -> Tensor:
        mean = self(x)
        log_std = self.log_std.clamp_min(LOG_STD_MIN)
        return -gaussian_log_prob(mean[:, None], log_std, returns[:, None]).mean()


# ----------------------------------------------------------------------------- Gaussians


def gaussian_log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """Sum over action dimensions of the diagonal Gaussian log-density."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p ‖ q) of two diagonal Gaussians, summed over action dimensions."""
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))
    z = (mean_p - mean_q) * torch.exp(-log_std_q)
    return (0.5 * (var_ratio + z.pow(2) - 1) - (log_std_p - log_std_q)).sum(-1)


def gaussian_kl_logvar(mean: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor, prior_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logvar) || N(prior_mean, e^prior_logvar)), summed over the last axis."""
    return 0.5 * (prior_logvar - logvar - 1 + (logvar.exp() + (mean - prior_mean) ** 2) / prior_logvar.exp()).sum(-1)


# ----------------------------------------------------------------------------- normalisation and baselines


class RunningMeanStd:
    """Running mean and variance of batches (OpenAI baselines' parallel-moments update)."""

    def __init__(self, dim: int):
        self.mean = np.zeros(dim, np.float64)
        self.var = np.ones(dim, np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1, self.mean.shape[0])
        b_mean, b_var, b_count = x.mean(0), x.var(0), x.shape[0]
        delta, total = b_mean - self.mean, self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.mean, self.var, self.count = self.mean + delta * b_count / total, m2 / total, total

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        return (x - mean) / torch.as_tensor(np.sqrt(self.var + 1e-8), dtype=x.dtype, device=x.device)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = state["mean"].copy(), state["var"].copy(), state["count"]


class LinearFeatureBaseline:
    """garage's LinearFeatureBaseline: ridge regression of returns on per-step features."""

    def __init__(self, reg_coeff: float = 1e-5):
        self.reg_coeff = reg_coeff
        self.coeffs: np.ndarray | None = None

    @staticmethod
    def features(obs: np.ndarray, steps: np.ndarray) -> np.ndarray:
        o = np.clip(obs, -10, 10)
        t = steps[..., None] / 100.0
        return np.concatenate([o, o**2, t, t**2, t**3, np.ones_like(t)], axis=-1)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        if self.coeffs is None:
            return np.zeros(feats.shape[:-1])
        return feats @ self.coeffs

    def fit(self, feats: np.ndarray, returns: np.ndarray) -> None:
        reg = self.reg_coeff
        a, b = feats.T @ feats, feats.T @ returns
        for _ in range(5):
            coeffs = np.linalg.lstsq(a + reg * np.eye(a.shape[0]), b, rcond=None)[0]
            if np.all(np.isfinite(coeffs)):
                self.coeffs = coeffs
                return
            reg *= 10


def explained_variance(values: torch.Tensor, returns: torch.Tensor, valid: torch.Tensor) -> float:
    """1 − Var(returns − values) / Var(returns) over the valid steps (garage logs it too)."""
    mask = valid.bool()
    r, v = returns[mask], values[mask]
    var = float(r.var())
    return float(1.0 - (r - v).var() / var) if var > 0 else 0.0
