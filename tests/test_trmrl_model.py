"""TrMRL policy network: T-Fixup factors, causal mask, head inputs, batching, likelihood, sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trmrl.model import LOG_STD_MIN, TransformerSettings, TrMRLPolicy, _layer_norm

MUJOCO = dict(token_dim=28, act_dim=6, d_model=128, heads=16, layers=4, dim_ff=512, window=5)
SMALL = dict(token_dim=7, act_dim=3, d_model=32, heads=4, layers=2, dim_ff=64, window=5)


def make(seed: int = 0, **kw) -> TrMRLPolicy:
    torch.manual_seed(seed)
    return TrMRLPolicy(TransformerSettings(**{**SMALL, **kw}))


def windows_batch(batch: int, s: TransformerSettings, seed: int = 1):
    """Random windows with random fill lengths; slots after the newest token are zeros."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, s.window + 1, (batch,), generator=g)
    w = torch.randn(batch, s.window, s.token_dim, generator=g)
    w[torch.arange(s.window)[None, :] >= lengths[:, None]] = 0.0
    return w, lengths


def xavier_bound(p: torch.Tensor) -> float:
    fan_out, fan_in = p.shape
    return math.sqrt(6.0 / (fan_in + fan_out))


# (a) T-Fixup ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [4, 8])
def test_tfixup_matches_hand_replay(layers):
    """Same seed: the built model equals a tfixup=False model with the §1.5 steps replayed by hand."""
    kw = dict(MUJOCO, layers=layers)
    torch.manual_seed(3)
    model = TrMRLPolicy(TransformerSettings(**kw, tfixup=True))
    torch.manual_seed(3)
    ref = TrMRLPolicy(TransformerSettings(**kw, tfixup=False))
    n, d = layers, kw["d_model"]
    with torch.no_grad():
        for block in ref.layers:  # (1) Xavier, in registration order
            for p in (block.self_attn.in_proj_weight, block.self_attn.out_proj.weight,
                      block.linear1.weight, block.linear2.weight):
                nn.init.xavier_uniform_(p)
        nn.init.normal_(ref.embedding.weight, 0.0, d ** -0.5)  # (2)
        ref.embedding.weight.mul_((9 * n) ** -0.25)
        f = 0.67 * n ** -0.25  # (3)
        for block in ref.layers:
            block.self_attn.in_proj_weight.mul_(f * 2 ** 0.5)
            block.self_attn.out_proj.weight.mul_(f)
            block.linear1.weight.mul_(f)
            block.linear2.weight.mul_(f)
    got, want = model.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for k in got:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("layers", [4, 8])
def test_tfixup_weight_statistics(layers):
    model = make(0, **dict(MUJOCO, layers=layers))
    n, d = layers, 128
    f = 0.67 * n ** -0.25
    emb_std = d ** -0.5 * (9 * n) ** -0.25  # 0.0361 for N=4
    assert model.embedding.weight.std().item() == pytest.approx(emb_std, rel=0.05)
    for block in model.layers:
        for p, factor in ((block.self_attn.in_proj_weight, f * math.sqrt(2)),
                          (block.self_attn.out_proj.weight, f),
                          (block.linear1.weight, f), (block.linear2.weight, f)):
            bound = xavier_bound(p) * factor
            m = p.abs().max().item()
            assert m <= bound * (1 + 1e-6)
            assert m >= 0.98 * bound  # a uniform fills its range
            assert p.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
        assert torch.all(block.self_attn.in_proj_bias == 0)
        assert torch.all(block.self_attn.out_proj.bias == 0)
    if layers == 4:
        assert f == pytest.approx(0.4738, abs=1e-4) and f * math.sqrt(2) == pytest.approx(0.670, abs=1e-9)


def test_tfixup_off_differs():
    on, off = make(0, tfixup=True), make(0, tfixup=False)
    assert not torch.equal(on.embedding.weight, off.embedding.weight)
    assert not torch.equal(on.layers[0].linear1.weight, off.layers[0].linear1.weight)
    # Default nn.Linear init (kaiming-uniform a=√5: bound 1/√fan_in), not the T-Fixup scale.
    assert off.embedding.weight.abs().max() <= 1 / math.sqrt(SMALL["token_dim"])
    assert off.embedding.weight.std() > 2 * on.embedding.weight.std()
    # The head does not depend on the flag beyond the random stream: same shapes, same zero biases.
    assert torch.all(on.head_out.bias == 0) and torch.all(off.head_out.bias == 0)


def test_output_gain_and_init_std():
    small = make(0, output_gain=0.01, init_std=0.2)
    w = small.head_out.weight
    assert w.abs().max() <= 0.01 * xavier_bound(w) * (1 + 1e-6)
    assert torch.allclose(small.log_std, torch.full((3,), math.log(0.2)))
    for layer in small.head_hidden:
        assert torch.all(layer.bias == 0)
        assert layer.weight.abs().max() <= xavier_bound(layer.weight) * (1 + 1e-6)
    assert [l.out_features for l in small.head_hidden] == [64, 64]


# (b) causal mask ------------------------------------------------------------------------------


@pytest.mark.parametrize("layernorm", ["none", "post", "pre"])
def test_causal_mask(layernorm):
    model = make(0, layernorm=layernorm)
    s = model.settings
    w, _ = windows_batch(4, s)
    w[:] = torch.randn_like(w)  # all slots filled
    lengths = torch.full((4,), s.window)
    base = model.encode(w, lengths)
    for t in range(1, s.window):
        w2 = w.clone()
        w2[:, t:] = torch.randn_like(w2[:, t:])
        out = model.encode(w2, lengths)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t], base[:, t])


# (c) head inputs ------------------------------------------------------------------------------


def test_written_out_attention_matches_multihead_attention():
    """EncoderBlock.attend (feature-major) is nn.MultiheadAttention's function on its own
    parameters, for a causal self-attention mask and for one query per row with a key padding
    mask; and the feature-major LayerNorm is nn.LayerNorm."""
    model = make(0, **MUJOCO)
    block, s = model.layers[0], model.settings
    x = torch.randn(6, s.window, s.d_model)
    fm = x.permute(2, 1, 0)  # (d, window, B)
    ours = block.attend(fm, fm, model._causal_scores_mask).permute(2, 1, 0)
    ref = block.self_attn(x, x, x, attn_mask=model.causal_mask, need_weights=False)[0]
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)
    newest = torch.tensor([0, 1, 2, 3, 4, 2])
    hidden = torch.arange(s.window)[None, :] > newest[:, None]
    query = x[torch.arange(6), newest].unsqueeze(1)
    additive = torch.zeros(hidden.shape).masked_fill(hidden, float("-inf")).t()[None, None]  # (1, 1, L, B)
    ours = block.attend(query.permute(2, 1, 0), fm, additive).permute(2, 1, 0)
    ref = block.self_attn(query, x, x, key_padding_mask=hidden, need_weights=False)[0]
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)
    norm = nn.LayerNorm(s.d_model)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    assert torch.allclose(_layer_norm(norm, fm).permute(2, 1, 0), norm(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layernorm", ["none", "post", "pre"])
def test_newest_only_last_block_matches_full_encoder(layernorm):
    """"latest" computes the last block at the newest position only; it must equal the full
    encoder's output there, for every fill level of the window, with and without gradients."""
    model = make(0, layernorm=layernorm)
    s = model.settings
    w, _ = windows_batch(3 * s.window, s)
    lengths = torch.arange(3 * s.window) % s.window + 1  # every fill count, three times
    full = model.encode(w, lengths)
    latest = model.head_input(w, lengths)
    rows = torch.arange(len(lengths))
    assert torch.allclose(latest, full[rows, lengths - 1], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model.head_input(w, lengths), latest, atol=1e-6, rtol=0)
    # and the gradients through it are the full encoder's gradients at that position
    latest.sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    full[rows, lengths - 1].sum().backward()
    for g, p in zip(grads, (p for p in model.parameters() if p.grad is not None)):
        assert torch.allclose(g, p.grad, atol=1e-5, rtol=1e-4)


def test_head_inputs():
    latest = make(0)
    s = latest.settings
    w, lengths = windows_batch(8, s)
    enc = latest.encode(w, lengths)
    assert enc.shape == (8, s.window, s.d_model)
    e = latest.head_input(w, lengths)
    assert e.shape == (8, s.d_model)
    for b in range(8):
        assert torch.allclose(e[b], enc[b, lengths[b] - 1], atol=1e-5)  # last block: newest only

    mixed = make(0, policy_head_input="mixed")
    m = mixed.head_input(w, lengths)
    assert m.shape == (8, 2 * s.d_model) and mixed.head_in_dim == 2 * s.d_model
    emb = mixed.embedding(w)
    menc = mixed.encode(w, lengths)
    for b in range(8):
        assert torch.allclose(m[b, : s.d_model], emb[b, lengths[b] - 1])
        assert torch.allclose(m[b, s.d_model:], menc[b, lengths[b] - 1], atol=1e-5)

    full = make(0, policy_head_input="full")
    f = full.head_input(w, lengths)
    assert f.shape == (8, s.window * s.d_model) and full.head_in_dim == s.window * s.d_model
    assert torch.allclose(f, full.encode(w, lengths).reshape(8, -1))
    for model in (latest, mixed, full):
        mean, log_std = model(w, lengths)
        assert mean.shape == (8, s.act_dim) and log_std.shape == (s.act_dim,)


# (d) batch consistency ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["latest", "mixed", "full"])
def test_batch_consistency(mode):
    model = make(0, policy_head_input=mode, **{k: v for k, v in MUJOCO.items()})
    s = model.settings
    w, lengths = windows_batch(16, s)
    with torch.no_grad():
        mean_b, _ = model(w, lengths)
        for b in (0, 5, 15):
            mean_1, _ = model(w[b: b + 1], lengths[b: b + 1])
            assert torch.allclose(mean_1[0], mean_b[b], atol=1e-6, rtol=0)
    # Grad mode (MultiheadAttention's fast path is off) gives the same numbers.
    mean_g, _ = model(w, lengths)
    assert torch.allclose(mean_g, mean_b, atol=1e-6, rtol=0)


def test_padding_after_newest_is_ignored():
    """What sits after the newest slot does not reach the head ("latest" and "mixed")."""
    for mode in ("latest", "mixed"):
        model = make(0, policy_head_input=mode)
        w, lengths = windows_batch(6, model.settings)
        lengths[:] = 2
        w2 = w.clone()
        w2[:, 2:] = torch.randn_like(w2[:, 2:])
        assert torch.allclose(model(w, lengths)[0], model(w2, lengths)[0], atol=1e-6, rtol=0)


# (e) likelihood ---------------------------------------------------------------------------------


def test_log_prob_matches_normal():
    model = make(0, init_std=0.5)
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-0.3, 0.1, -1.2]))
    w, lengths = windows_batch(10, model.settings)
    actions = torch.randn(10, 3) * 2
    mean, log_std = model(w, lengths)
    want = torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
    got = model.log_prob(w, lengths, actions)
    assert got.shape == (10,)
    assert torch.allclose(got, want, atol=1e-5)
    got.sum().backward()
    assert model.log_std.grad is not None and model.embedding.weight.grad is not None


def test_log_std_clamped():
    model = make(0)
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-20.0, 0.0, -13.0]))
    w, lengths = windows_batch(2, model.settings)
    _, log_std = model(w, lengths)
    assert log_std[0].item() == pytest.approx(LOG_STD_MIN) and LOG_STD_MIN == pytest.approx(math.log(1e-6))
    assert log_std[1].item() == 0.0 and log_std[2].item() == pytest.approx(-13.0)


# (f) LayerNorm --------------------------------------------------------------------------------


@pytest.mark.parametrize("layernorm,count", [("none", 0), ("post", 4), ("pre", 5)])
def test_layernorm_modules(layernorm, count):
    model = make(0, layernorm=layernorm)
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == count
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_bad_settings():
    with pytest.raises(ValueError):
        make(0, layernorm="both")
    with pytest.raises(ValueError):
        make(0, policy_head_input="everything")
    with pytest.raises(ValueError):
        make(0, d_model=30, heads=4)


# (g) sizes ------------------------------------------------------------------------------------


def test_mujoco_parameter_count():
    model = make(0, **MUJOCO)
    transformer = sum(p.numel() for p in model.layers.parameters())
    embedding = model.embedding.weight.numel()
    head = sum(p.numel() for p in model.head_hidden.parameters()) + sum(
        p.numel() for p in model.head_out.parameters()) + model.log_std.numel()
    assert transformer == 4 * ((3 * 128 * 128 + 3 * 128) + (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128))
    assert transformer == 791_040  # trmrl.md §1.3: ~791k
    assert embedding == 28 * 128 and model.embedding.bias is None  # ~3.6k
    assert head == (128 * 64 + 64) + (64 * 64 + 64) + (64 * 6 + 6) + 6  # ~12.8k
    assert sum(p.numel() for p in model.parameters()) == transformer + embedding + head  # ~0.81M


def test_sinusoidal_positions():
    model = make(0)
    pe = model.pos_encoding
    d = model.settings.d_model
    pos, i = 3, 5
    freq = 10000 ** (-(2 * i) / d)
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos * freq), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos * freq), abs=1e-6)
    # The first block sees embedding + positions, with no √d scaling.
    seen = []
    model.layers[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    w, lengths = windows_batch(3, model.settings)
    model.encode(w, lengths)
    assert torch.allclose(seen[0].permute(2, 1, 0), model.embedding(w) + pe)  # blocks run feature-major


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = make(0, **MUJOCO)
    w, lengths = windows_batch(32, model.settings)
    actions = torch.randn(32, 6)
    with torch.no_grad():
        want = model.log_prob(w, lengths, actions)
        model.cuda()
        got = model.log_prob(w.cuda(), lengths.cuda(), actions.cuda())
    assert torch.allclose(got.cpu(), want, atol=1e-3, rtol=1e-4)
