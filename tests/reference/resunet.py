"""PyTorch reference of the official ResUNet30 / ResUNet30 with K slots, written from the spec.

Written here from ``baseline_spec.md`` §3 (not copied from the baseline). Its ``state_dict`` has
the official keys and shapes (Appendix A), including the frozen STFT/ISTFT kernels (torchlibrosa
modules), the dead decoder ``bn2`` / FiLM ``beta2`` and the ``film.<a>-><b>->betaX`` names.
``channels`` shrinks the widths for fast tests. Used only by tests and benchmarks.

``forward`` stores intermediate tensors in ``self.base.taps`` (PyTorch layout ``(B, C, T, F)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchlibrosa.stft import ISTFT, STFT

MOMENTUM = 0.01
SLOPE = 0.01
K = 3


def _bn(n: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(n, momentum=MOMENTUM)


class ConvBlockRes(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.bn2 = _bn(cin), _bn(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.has_film = True

    def forward(self, x, film):
        h = self.conv1(F.leaky_relu(self.bn1(x) + film["beta1"], SLOPE))
        h = self.conv2(F.leaky_relu(self.bn2(h) + film["beta2"], SLOPE))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class EncoderBlock(nn.Module):
    def __init__(self, cin, cout, pool):
        super().__init__()
        self.conv_block1 = ConvBlockRes(cin, cout)
        self.pool = pool

    def forward(self, x, film):
        e = self.conv_block1(x, film["conv_block1"])
        return F.avg_pool2d(e, self.pool), e


class DecoderBlock(nn.Module):
    def __init__(self, cin, cout, up):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(cin, cout, up, stride=up, bias=False)
        self.bn1 = _bn(cin)
        self.conv_block2 = ConvBlockRes(2 * cout, cout)
        self.bn2 = _bn(cin)  # dead, as in the official code
        self.has_film = True

    def forward(self, x, skip, film):
        u = self.conv1(F.leaky_relu(self.bn1(x) + film["beta1"], SLOPE))
        return self.conv_block2(torch.cat([u, skip], dim=1), film["conv_block2"])


class Base(nn.Module):
    def __init__(self, channels, in_ch=4, slots=1):
        super().__init__()
        c = list(channels)
        self.in_ch, self.slots = in_ch, slots
        self.stft = STFT(n_fft=1024, hop_length=160, win_length=1024, window="hann",
                         center=True, pad_mode="reflect", freeze_parameters=True)
        self.istft = ISTFT(n_fft=1024, hop_length=160, win_length=1024, window="hann",
                           center=True, pad_mode="reflect", freeze_parameters=True)
        self.bn0 = _bn(513)
        self.pre_conv = nn.Conv2d(in_ch, c[0], 1)
        pools = [(2, 2)] * 5 + [(1, 2)]
        cin = c[0]
        for i in range(6):
            setattr(self, f"encoder_block{i + 1}", EncoderBlock(cin, c[i], pools[i]))
            cin = c[i]
        self.conv_block7a = EncoderBlock(c[5], c[5], (1, 1))
        dec = [c[5], c[4], c[3], c[2], c[1], c[0]]
        ups = [(1, 2)] + [(2, 2)] * 5
        for j in range(6):
            setattr(self, f"decoder_block{j + 1}", DecoderBlock(cin, dec[j], ups[j]))
            cin = dec[j]
        self.after_conv = nn.Conv2d(c[0], slots * in_ch * K, 1)
        self.out_conv = nn.Conv2d(in_ch, 1, 1)
        self.taps: dict[str, torch.Tensor] = {}

    def forward(self, mixture, film):
        b, c, length = mixture.shape
        re, im = zip(*(self.stft(mixture[:, i]) for i in range(c)), strict=True)
        re, im = torch.cat(re, 1), torch.cat(im, 1)  # (B, C, T, 513)
        mag = torch.clamp(re**2 + im**2, 1e-10) ** 0.5
        cos_in, sin_in = re / mag, im / mag
        x = self.bn0(mag.transpose(1, 3)).transpose(1, 3)
        self.taps["bn0"] = x
        frames = x.shape[2]
        x = F.pad(x, (0, 0, 0, -frames % 32))[..., :512]
        x = self.pre_conv(x)
        skips = []
        for i in range(6):
            name = f"encoder_block{i + 1}"
            x, e = getattr(self, name)(x, film[name])
            skips.append(e)
            self.taps[name] = x
        x, _ = self.conv_block7a(x, film["conv_block7a"])
        self.taps["conv_block7a"] = x
        for j in range(6):
            name = f"decoder_block{j + 1}"
            x = getattr(self, name)(x, skips[5 - j], film[name])
            self.taps[name] = x
        z = F.pad(self.after_conv(x), (0, 1))[:, :, :frames]
        self.taps["after_conv"] = z
        s = self.slots
        z = z.reshape(b, s, c, K, frames, 513)
        m = torch.sigmoid(z[:, :, :, 0])
        r, i = torch.tanh(z[:, :, :, 1]), torch.tanh(z[:, :, :, 2])
        norm = torch.clamp((r**2 + i**2) ** 0.5, 1e-10)
        cd, sd = r / norm, i / norm
        co = cos_in[:, None] * cd - sin_in[:, None] * sd
        so = sin_in[:, None] * cd + cos_in[:, None] * sd
        y = F.relu(mag[:, None] * m)
        y_re = (y * co).reshape(b * s, c, frames, 513)
        y_im = (y * so).reshape(b * s, c, frames, 513)
        o_re, o_im = self.out_conv(y_re), self.out_conv(y_im)  # (B·S, 1, T, F)
        self.taps["out_re"], self.taps["out_im"] = o_re, o_im
        wav = self.istft(o_re, o_im, length)
        return wav.reshape(b, s, length)


def _film_meta(module: nn.Module, prefix: str = "") -> dict:
    out = {}
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if getattr(child, "has_film", False):
            out[f"{path}->beta1"] = child.bn1.num_features
            out[f"{path}->beta2"] = child.bn2.num_features
        out.update(_film_meta(child, path + "->"))
    return out


class ResUNet30(nn.Module):
    """``ResUNet30(4, 1, slots, 18·slots)`` of the spec; ``forward`` → ``(B, slots, L)``."""

    def __init__(self, slots: int = 1, channels=(32, 64, 128, 256, 384, 384)):
        super().__init__()
        self.slots = slots
        self.base = Base(channels, 4, slots)
        label_len = 18 * slots
        self.label_embedding = nn.Sequential(
            nn.Linear(label_len, 512), nn.LayerNorm(512), nn.ReLU(),
            nn.Linear(512, 512), nn.LayerNorm(512), nn.ReLU(),
        )
        self.film = nn.ModuleDict(
            {k: nn.Linear(512, n) for k, n in _film_meta(self.base).items()}
        )

    def forward(self, mixture, query):
        c = self.label_embedding(query)
        film: dict = {}
        for key, lin in self.film.items():
            node = film
            *parents, leaf = key.split("->")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = lin(c)[:, :, None, None]
        wav = self.base(mixture, film)
        mask = (query.reshape(query.shape[0], self.slots, -1).abs().sum(-1) != 0).to(wav.dtype)
        return wav * mask[..., None]


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights incl. BN affine and running stats (frozen STFT kernels untouched)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".stft." in name or ".istft." in name:
                continue
            if name.endswith("bn0.weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif p.ndim == 1 and name.endswith(".weight"):  # BN / LayerNorm scales
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
    return model


def numpy_state_dict(model: nn.Module) -> dict:
    """``state_dict`` as numpy arrays (what ``s5jax.torch_io.state_dict`` returns)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def save_lightning(model: nn.Module, path) -> None:
    """``torch.save`` a Lightning-style checkpoint: ``{'state_dict': {'model.' + key: tensor}}``."""
    sd = {"model." + k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"epoch": 0, "global_step": 0, "state_dict": sd}, path)
