"""TrMRL policy network: a causal transformer over the last few RL² tokens, then a Gaussian MLP.

What the original does (`GaussianTransformerEncoderPolicy` on the `trmrl-torch` branch of
luckeciano/transformers-metarl; research/trmrl.md §1), and how this module follows it:

* **Working memory** (§1.1). Each RL² token [s_t, a_{t-1}, r_{t-1}, done_{t-1}] is embedded by one
  bias-free linear layer, with no nonlinearity and *no* √d_model scaling (the original has that
  line commented out). A standard sinusoidal positional encoding of length `window` is added;
  dropout is 0 everywhere, so there are no dropout modules here at all.
* **Window** (§1.2). The caller keeps the window: tokens sit at positions 0..len-1 and the empty
  slots after them are zeros. A causal mask (each position sees itself and earlier positions)
  hides those empty slots from the newest position. The original finds the newest position by
  looking for the first all-zero row; here the caller passes `lengths` instead, which is the
  same thing without the hazard of a real token that happens to be all zeros.
* **Encoder** (§1.3). `layers` post-residual blocks with every LayerNorm removed
  (`layernorm="none"`, TrMRL's `--remove_ln`): x ← x + MHA(x); x ← x + W2·ReLU(W1·x + b1) + b2;
  no final norm. `"post"` is the standard post-LN block (what the original builds without
  `--remove_ln`: `nn.TransformerEncoderLayer`, no final norm); `"pre"` is a pre-LN block with a
  final LayerNorm, which the original does not have (an ablation only). Attention is an
  `nn.MultiheadAttention` module, which keeps Q, K and V in one `in_proj_weight`; parameters
  are registered in the original's order and under its names (`self_attn.in_proj_weight`,
  `self_attn.out_proj`, `linear1`, `linear2`). Its function is written out with those
  parameters (`EncoderBlock.attend`; a test checks it against the module's own forward).
* **Episodic memory e_t** (§1.4, `--policy_head_input`): `"latest"` (the paper's setting) is the
  encoder output at the newest position; `"mixed"` concatenates [embedding of the newest token
  (before the positional encoding), e_t] in that order, as the original does; `"full"` flattens
  the outputs at all `window` positions, padded ones included, as the original does. For
  "latest" and "mixed" the last block is computed at the newest position only (the original
  computes every position and picks one; the same numbers up to float rounding).
* **Policy head** (§1.4, garage's `GaussianMLPModule`): MLP head_in → 64 → 64 → act_dim with tanh
  hidden units and a linear output; hidden weights Xavier-uniform, output weights Xavier-uniform
  with gain `output_gain` (1.0 HalfCheetah, 0.01 AntDir/Meta-World), all biases 0. The std is
  state-independent: one learned log-std per action dimension, initialised to log(init_std)
  ("exp" parameterisation) and clamped below at log(1e-6) wherever it is used. No tanh squashing
  and no clipping of actions.
* **T-Fixup** (§1.5, `--tfixup`), applied after every module is built, in the original's order:
  (1) Xavier-uniform (gain 1) on every transformer matrix: `in_proj_weight` (the whole 3d×d
  stack), `out_proj.weight`, `linear1.weight`, `linear2.weight` of every layer, in parameter
  order; biases keep PyTorch's defaults (attention biases 0, FFN biases default uniform);
  (2) embedding weight ~ N(0, d_model^-1/2), then × (9N)^-1/4 (N = `layers`);
  (3) `linear1`, `linear2`, `out_proj` weights × 0.67·N^-1/4, and the *whole* `in_proj_weight`
  (Q and K too, not just V as in the reference T-Fixup) × 0.67·N^-1/4·√2. The head and the
  log-std are untouched.
  With `tfixup=False` the transformer keeps PyTorch's default initialisation and the embedding a
  plain default `nn.Linear` initialisation. (Note: the original runs step (1), the Xavier
  re-initialisation, even without `--tfixup`; this module does not, by design of the suite.)

Inputs and outputs are batch-first; one call handles a whole batch of windows. Inside, the encoder
runs feature-major, (d_model, window, B) with the batch innermost: every linear layer is one
GEMM W·X, and attention splits heads as a view (heads, d/heads, window, B) and is written as
broadcast products and sums over those blocks. Batch-first, the heads need transposed copies
and the attention's ops run on rows of 5-16 contiguous numbers (a bmm per window and head, a
softmax over 5 entries), which on the CPU cost more than the GEMMs around them; feature-major,
every elementwise op runs over B contiguous numbers. The function is the same up to float
rounding (tests compare it with `nn.MultiheadAttention` and `nn.LayerNorm`). No
device-specific code: the module runs wherever it is moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metarl.learning import LOG_STD_MIN, gaussian_log_prob  # LOG_STD_MIN: garage's min_std=1e-6, "exp"

__all__ = ["TransformerSettings", "TrMRLPolicy", "LOG_STD_MIN"]

_LAYERNORMS = ("none", "post", "pre")
_HEAD_INPUTS = ("latest", "mixed", "full")


@dataclass
class TransformerSettings:
    token_dim: int
    act_dim: int
    d_model: int = 128
    heads: int = 16
    layers: int = 4
    dim_ff: int = 512
    window: int = 5
    tfixup: bool = True
    layernorm: str = "none"  # "none" (TrMRL), "post" (post-LN blocks), "pre" (pre-LN + final LN)
    policy_head_input: str = "latest"  # "latest" (d), "mixed" (2d), "full" (window·d)
    head_hidden: tuple = (64, 64)
    output_gain: float = 1.0  # Xavier gain of the head's output layer (1.0 or 0.01)
    init_std: float = 1.0  # initial std of the state-independent Gaussian


def sinusoidal_encoding(length: int, d_model: int) -> Tensor:
    """(length, d_model): sin on even dims, cos on odd dims, frequencies 10000^(-2i/d)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freqs = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(position * freqs)
    pe[:, 1::2] = torch.cos(position * freqs[: d_model // 2])  # odd d_model: one cos fewer
    return pe


class EncoderBlock(nn.Module):
    """One self-attention + ReLU feed-forward block; LayerNorm placement per `layernorm`.

    Attributes are named as in PyTorch's/TrMRL's encoder layers so that T-Fixup can address
    them the same way, and registered in the same order (attention first, then linear1, linear2)
    so the Xavier pass draws the random numbers in the original's order. Activations are
    feature-major, (d_model, positions, B) (module docstring).
    """

    def __init__(self, d_model: int, heads: int, dim_ff: int, layernorm: str):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=0.0, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_ff)
        self.linear2 = nn.Linear(dim_ff, d_model)
        self.layernorm = layernorm
        if layernorm != "none":
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)

    def attend(self, query: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        """`self_attn(query, memory, memory)` on feature-major query (d, Lq, B) and memory
        (d, L, B) → (d, Lq, B); `mask` is added to the scores (0 = may attend, -inf = may not)
        and broadcasts to (heads, Lq, L, B). MultiheadAttention's parameters and function,
        written out (equal up to float rounding)."""
        attn = self.self_attn
        d, heads = attn.embed_dim, attn.num_heads
        _, length, batch = memory.shape
        q_len = query.shape[1]
        w, b = attn.in_proj_weight, attn.in_proj_bias
        if query is memory:  # self-attention: one GEMM for Q, K and V
            q, k, v = torch.addmm(b[:, None], w, memory.reshape(d, -1)).view(3, heads, d // heads, length, batch)
        else:
            q = torch.addmm(b[:d, None], w[:d], query.reshape(d, -1)).view(heads, d // heads, q_len, batch)
            k, v = torch.addmm(b[d:, None], w[d:], memory.reshape(d, -1)).view(2, heads, d // heads, length, batch)
        # scores (heads, Lq, L, B): sum over each head's features of query x key
        scores = (q[:, :, :, None] * k[:, :, None]).sum(1) * (d // heads) ** -0.5
        weights = (scores + mask).softmax(2)
        out = (weights[:, None] * v[:, :, None]).sum(3)  # (heads, d/heads, Lq, B)
        return _linear(attn.out_proj, out.reshape(d, q_len, batch))

    def _feed_forward(self, x: Tensor) -> Tensor:
        # ReLU in place: addmm's backward needs its inputs, not its output
        return _linear(self.linear2, _linear(self.linear1, x).relu_())

    def forward_newest(self, x: Tensor, newest: Tensor) -> Tensor:
        """`forward(x, causal_mask)` at one position per window, `newest` (B,), → (d, 1, B).

        The same numbers up to float rounding: that position's row of the causal mask hides the
        positions after it. Only its query, attention output and feed-forward are computed, so
        the last block does about a `window`-th of that work (what the "latest" and "mixed"
        heads read is nothing more)."""
        batch = x.shape[2]
        positions = torch.arange(x.shape[1], device=x.device)
        mask = torch.zeros(positions.shape[0], batch, device=x.device, dtype=x.dtype)
        mask = mask.masked_fill(positions[:, None] > newest[None, :], float("-inf"))  # (L, B)
        query = x[:, newest, torch.arange(batch, device=x.device)].unsqueeze(1)
        return self._block(query, x, mask)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self._block(x, x, mask)

    def _block(self, query: Tensor, x: Tensor, mask: Tensor) -> Tensor:
        if self.layernorm == "none":  # TrMRL: residual sums only, nothing normalises the stream
            q = query + self.attend(query, x, mask)
            return q + self._feed_forward(q)
        if self.layernorm == "post":
            q = _layer_norm(self.norm1, query + self.attend(query, x, mask))
            return _layer_norm(self.norm2, q + self._feed_forward(q))
        # "pre"
        normed = _layer_norm(self.norm1, x)
        q_normed = normed if query is x else _layer_norm(self.norm1, query)
        q = query + self.attend(q_normed, normed, mask)
        return q + self._feed_forward(_layer_norm(self.norm2, q))


def _linear(layer: nn.Linear, x: Tensor) -> Tensor:
    """`layer` on feature-major x (in, ..., B) → (out, ..., B)."""
    return torch.addmm(layer.bias[:, None], layer.weight, x.reshape(x.shape[0], -1)).view(-1, *x.shape[1:])


def _layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """`norm` over the feature axis (0) of a feature-major x."""
    mean = x.mean(0)
    centred = x - mean
    var = (centred * centred).mean(0)
    return centred * torch.rsqrt(var + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]


class TrMRLPolicy(nn.Module):
    """Window of RL² tokens → (Gaussian mean, log-std). See the module docstring."""

    def __init__(self, s: TransformerSettings):
        super().__init__()
        if s.layernorm not in _LAYERNORMS:
            raise ValueError(f"layernorm must be one of {_LAYERNORMS}, not {s.layernorm!r}")
        if s.policy_head_input not in _HEAD_INPUTS:
            raise ValueError(f"policy_head_input must be one of {_HEAD_INPUTS}, not {s.policy_head_input!r}")
        if s.d_model % s.heads:
            raise ValueError(f"d_model={s.d_model} is not divisible by heads={s.heads}")
        if s.window < 1 or s.layers < 1:
            raise ValueError("window and layers must be at least 1")
        self.settings = s

        # Working memory: bias-free linear embedding (no √d scaling) + fixed sinusoidal positions.
        self.embedding = nn.Linear(s.token_dim, s.d_model, bias=False)
        self.register_buffer("pos_encoding", sinusoidal_encoding(s.window, s.d_model), persistent=False)
        # True = "may not attend": strictly upper triangle, so position i sees 0..i only; and
        # as the additive mask the blocks take, (1, query, key, 1): 0 or -inf.
        causal = torch.triu(torch.ones(s.window, s.window, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_mask", causal, persistent=False)
        additive = torch.zeros(s.window, s.window).masked_fill(causal, float("-inf"))
        self.register_buffer("_causal_scores_mask", additive[None, :, :, None], persistent=False)

        self.layers = nn.ModuleList(
            EncoderBlock(s.d_model, s.heads, s.dim_ff, s.layernorm) for _ in range(s.layers)
        )
        self.final_norm = nn.LayerNorm(s.d_model) if s.layernorm == "pre" else None

        self.head_in_dim = {"latest": s.d_model, "mixed": 2 * s.d_model, "full": s.window * s.d_model}[
            s.policy_head_input
        ]
        sizes = (self.head_in_dim, *s.head_hidden)
        self.head_hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head_out = nn.Linear(sizes[-1], s.act_dim)
        for layer in self.head_hidden:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.xavier_uniform_(self.head_out.weight, gain=s.output_gain)
        nn.init.zeros_(self.head_out.bias)
        self.log_std = nn.Parameter(torch.full((s.act_dim,), math.log(s.init_std)))

        if s.tfixup:
            self._t_fixup()

    @torch.no_grad()
    def _t_fixup(self) -> None:
        """research/trmrl.md §1.5, steps in the original's order (the head is not touched)."""
        n = self.settings.layers
        # (1) Xavier on every transformer matrix (dim > 1), in parameter order; biases as built.
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # (2) Embedding: N(0, d^-1/2), then T-Fixup's (9N)^-1/4 input scaling.
        nn.init.normal_(self.embedding.weight, 0.0, self.settings.d_model ** -0.5)
        self.embedding.weight.mul_((9 * n) ** -0.25)
        # (3) Depth scaling. TrMRL scales the whole stacked QKV matrix by the "value" factor
        # (√2 included), not only V as the reference T-Fixup does.
        factor = 0.67 * n ** -0.25
        for block in self.layers:
            block.linear1.weight.mul_(factor)
            block.linear2.weight.mul_(factor)
            block.self_attn.out_proj.weight.mul_(factor)
            block.self_attn.in_proj_weight.mul_(factor * math.sqrt(2.0))

    def _embed(self, windows: Tensor) -> Tensor:
        """(B, window, token_dim) → feature-major token embeddings (d_model, window, B)."""
        s = self.settings
        if windows.dim() != 3 or windows.shape[1] != s.window or windows.shape[2] != s.token_dim:
            raise ValueError(
                f"windows must have shape (B, {s.window}, {s.token_dim}), got {tuple(windows.shape)}"
            )
        tokens = windows.permute(2, 1, 0).reshape(s.token_dim, -1)
        return (self.embedding.weight @ tokens).view(s.d_model, s.window, windows.shape[0])

    def _run_encoder(self, embedded: Tensor, newest: Tensor | None = None) -> Tensor:
        """Feature-major encoder output at every position (d_model, window, B), or with
        `newest` (B,) only at that position of each window (d_model, 1, B), the last block
        computing nothing else."""
        x = embedded + self.pos_encoding.t()[:, :, None]
        blocks = list(self.layers)
        for block in blocks if newest is None else blocks[:-1]:
            x = block(x, self._causal_scores_mask)
        if newest is not None:
            x = blocks[-1].forward_newest(x, newest)
        if self.final_norm is not None:
            x = _layer_norm(self.final_norm, x)
        return x

    def encode(self, windows: Tensor, lengths: Tensor) -> Tensor:
        """(B, window, token_dim) windows → encoder output at every position, (B, window, d_model).

        `lengths` is not needed here (the causal mask already hides the zero slots after the
        newest token from it); it is accepted so all entry points share one signature.
        """
        return self._run_encoder(self._embed(windows)).permute(2, 1, 0)

    def head_input(self, windows: Tensor, lengths: Tensor) -> Tensor:
        """The episodic memory e_t fed to the policy head, (B, head_in_dim)."""
        embedded = self._embed(windows)
        mode = self.settings.policy_head_input
        if mode == "full":
            out = self._run_encoder(embedded)
            return out.permute(2, 1, 0).reshape(out.shape[2], -1)
        newest = lengths.to(device=embedded.device, dtype=torch.long) - 1
        latest = self._run_encoder(embedded, newest).squeeze(1).t()
        if mode == "latest":
            return latest
        rows = torch.arange(embedded.shape[2], device=embedded.device)
        return torch.cat((embedded[:, newest, rows].t(), latest), dim=-1)  # "mixed": [token embedding, e_t]

    def clamped_log_std(self) -> Tensor:
        return self.log_std.clamp(min=LOG_STD_MIN)

    def forward(self, windows: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """→ (mean (B, act_dim), log_std (act_dim,)), log_std clamped below at log(1e-6)."""
        h = self.head_input(windows, lengths)
        for layer in self.head_hidden:
            h = torch.tanh(layer(h))
        return self.head_out(h), self.clamped_log_std()

    def log_prob(self, windows: Tensor, lengths: Tensor, actions: Tensor) -> Tensor:
        """(B,) diagonal-Gaussian log-likelihood of raw `actions` (no squashing, no clipping)."""
        mean, log_std = self(windows, lengths)
        return gaussian_log_prob(mean, log_std, actions)
