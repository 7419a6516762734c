"""PyTorch reference of the baseline tagger (``M2dAt``), written here from baseline_spec.md §4.

Used only by parity tests. State-dict names and layouts follow spec Appendix B
(``backbone.*``, ``head_norm.*``, ``head.*``, ``to_spec.*``); widths are configurable so tests can
run small models. The mel front end is nnAudio's own ``MelSpectrogram``.
"""

from __future__ import annotations

import math

import torch
from nnAudio.features import MelSpectrogram
from torch import nn
from torch.nn import functional as F

LOG_OFFSET = torch.finfo(torch.float32).eps
CHUNK = 1001


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch, stride=patch)

    def forward(self, x):  # (B, 1, mel, T) -> (B, n_f * n_t, D), frequency-major
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        attn = ((q * hd**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, dim=768, depth=12, heads=12, mlp_ratio=4, patch=16, n_mels=80,
                 frames=CHUNK, norm_stats=(-7.1, 4.2)):
        super().__init__()
        self.patch, self.n_f, self.n_t = patch, n_mels // patch, frames // patch
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.n_f * self.n_t, dim) * 0.02)
        self.norm_stats = nn.Parameter(torch.tensor(norm_stats), requires_grad=False)
        self.patch_embed = PatchEmbed(dim, patch)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward_encoder(self, x):  # (B, 1, mel, T<=1001) -> (B, 1 + N, D)
        x = self.patch_embed(x)
        d = x.shape[-1]
        n_t = x.shape[1] // self.n_f
        pos = self.pos_embed[:, 1:].reshape(1, self.n_f, self.n_t, d)[:, :, :n_t]
        x = x + pos.reshape(1, -1, d)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def encode_lms(self, lms, stacked=False):  # (B, 1, mel, T) -> tokens
        total = lms.shape[-1]
        n_chunk = math.ceil(total / CHUNK)
        lms = F.pad(lms, (0, (self.patch - total % self.patch) % self.patch))
        outs = []
        for i in range(n_chunk):
            tok = self.forward_encoder(lms[..., i * CHUNK : (i + 1) * CHUNK])[:, 1:]
            if stacked:
                b, n, d = tok.shape
                tok = tok.reshape(b, self.n_f, n // self.n_f, d).permute(0, 2, 1, 3)
                tok = tok.reshape(b, n // self.n_f, self.n_f * d)
            outs.append(tok)
        return torch.cat(outs, dim=1)


class M2dAt(nn.Module):
    """Channel-0 log-mel → ViT → mean tokens → BatchNorm1d(affine=False) → Linear → sigmoid."""

    def __init__(self, dim=768, depth=12, heads=12, mlp_ratio=4, stacked=False, num_classes=18,
                 norm_stats=(-7.1, 4.2)):
        super().__init__()
        self.stacked = stacked
        self.backbone = ViT(dim, depth, heads, mlp_ratio, norm_stats=norm_stats)
        feat = dim * (self.backbone.n_f if stacked else 1)
        self.head_norm = nn.BatchNorm1d(feat, affine=False)
        self.head = nn.Linear(feat, num_classes)
        self.to_spec = MelSpectrogram(
            sr=32000, n_fft=800, win_length=800, hop_length=320, n_mels=80, fmin=50, fmax=16000,
            center=True, pad_mode="reflect", power=2.0, htk=False, trainable_mel=False,
            trainable_STFT=False, verbose=False,
        )

    def lms(self, mixture):  # (B, C, L) -> (B, 1, 80, T)
        x = torch.log(self.to_spec(mixture[:, 0]) + LOG_OFFSET)
        mean, std = self.backbone.norm_stats
        return ((x - mean) / std).unsqueeze(1)

    def tokens(self, mixture):
        return self.backbone.encode_lms(self.lms(mixture), stacked=self.stacked)

    def forward(self, mixture):
        feats = self.tokens(mixture).mean(dim=1)
        feats = self.head_norm(feats.unsqueeze(-1)).squeeze(-1)
        return torch.sigmoid(self.head(feats))


def randomize_(model: M2dAt, seed: int = 0) -> M2dAt:
    """Give every parameter and the BN statistics non-trivial random values (norm_stats kept)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm_stats"):
                continue
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        model.head.weight.mul_(20.0)  # probabilities well away from 0.5
        model.head_norm.running_mean.copy_(0.1 * torch.randn(model.head_norm.running_mean.shape,
                                                             generator=g))
        model.head_norm.running_var.copy_(0.5 + torch.rand(model.head_norm.running_var.shape,
                                                           generator=g))
    return model.eval()
