"""PyTorch reference of the DCASE 2026 taggers, written here from the official ``m2dat.py``
(``M2dAt`` with ``HeadAvgLinear``), ``m2dat_spatial.py`` (``M2dAtSpatial``,
``catchan_average_linear``) and ``s5.py`` (``predict_label``, ``predict_label_separate``).

Used only by parity tests. The encoder and front end are ``tests/reference/vit.py``'s. State-dict
names follow the official modules: ``backbone.*``, ``head_norm.*`` (the encoder's own 527-class
BatchNorm, unused by the 2026 forward), ``head.{m2d_out_norm, linear.{0,1}, tracks.N.{0,1,3}}``,
``to_spec.*``; the 4-channel model nests the encoder under ``m2d.``.
"""

from __future__ import annotations

import torch
from torch import nn

from tests.reference import vit

CLASSES = ["AlarmClock", "BicycleBell", "Blender", "Buzzer", "Clapping", "Cough",
           "CupboardOpenClose", "Dishes", "Doorbell", "FootSteps", "HairDryer", "MechanicalFans",
           "MusicalKeyboard", "Percussion", "Pour", "Speech", "Typing", "VacuumCleaner"]
SILENCE = "silence"


class HeadAvgLinear(nn.Module):
    """Mean over tokens → BatchNorm1d(affine=False) → Linear → LN → ReLU → per-slot MLPs."""

    def __init__(self, feat: int, slots: int = 3, classes: int = 19, width: int = 1024,
                 hidden: int = 512):
        super().__init__()
        self.slots, self.width = slots, width
        self.m2d_out_norm = nn.BatchNorm1d(feat, eps=1e-5, momentum=0.1, affine=False)
        self.linear = nn.Sequential(nn.Linear(feat, slots * width), nn.LayerNorm(slots * width),
                                    nn.ReLU())
        self.tracks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                          nn.Linear(hidden, classes))
            for _ in range(slots))

    def forward(self, tokens):  # (B, N, F) → (B, slots, classes)
        x = self.linear(self.m2d_out_norm(tokens.mean(1)))
        x = x.view(x.shape[0], self.slots, self.width)
        return torch.stack([t(x[:, i]) for i, t in enumerate(self.tracks)], dim=1)


class M2dAtSlots(vit.M2dAt):
    """The 1-channel 2026 tagger (reference channel 0); ``head=None`` makes the encoder part
    of ``M2dAtSpatial`` (the official ``head_layer='identity'``)."""

    def __init__(self, dim=768, depth=12, heads=12, stacked=False, norm_stats=(-7.1, 4.2),
                 slot_dims=(1024, 512), head=True):
        super().__init__(dim, depth, heads, stacked=stacked, num_classes=527,
                         norm_stats=norm_stats)
        self.feat = dim * (self.backbone.n_f if stacked else 1)
        self.head = HeadAvgLinear(self.feat, width=slot_dims[0], hidden=slot_dims[1]) \
            if head else nn.Identity()

    def forward(self, mixture):  # (B, C, L) → logits (B, 3, 19)
        return self.head(self.tokens(mixture))


class M2dAtSpatial(nn.Module):
    """One shared encoder per channel; tokens concatenated channel-major before the head."""

    def __init__(self, nchan=4, slot_dims=(1024, 512), **encoder_kwargs):
        super().__init__()
        self.m2d = M2dAtSlots(head=False, **encoder_kwargs)
        self.head = HeadAvgLinear(nchan * self.m2d.feat, width=slot_dims[0], hidden=slot_dims[1])

    def tokens(self, mixture):  # (B, C, L) → (B, N, C·F)
        b, c, n = mixture.shape
        tok = self.m2d.tokens(mixture.reshape(b * c, 1, n))  # (B·C, N, F)
        tok = tok.view(b, c, *tok.shape[1:]).permute(0, 2, 1, 3)
        return tok.reshape(b, tok.shape[1], -1)

    def forward(self, mixture):
        return self.head(self.tokens(mixture))


def predict_labels(logits):
    """Official ``predict`` → ``S5.predict_label`` → ``predict_label_separate`` label lists:
    per slot the arg-max of the softmax (19 = silence), silence moved last (stable)."""
    idx = torch.max(torch.softmax(logits, dim=-1), dim=-1).indices
    names = CLASSES + [SILENCE]
    out = []
    for row in idx.tolist():
        labels = [names[i] for i in row]
        out.append(sorted(labels, key=lambda lab: lab == SILENCE))
    return out


def randomize_(model: nn.Module, seed: int = 0, silence_bias: float = 2.0) -> nn.Module:
    """Random non-trivial weights and BN statistics (``norm_stats`` kept); slot logits spread
    over several units so that the arg-max is decisive, silence favoured by ``silence_bias``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm_stats"):
                continue
            is_norm = p.ndim == 1 and ("norm" in name or ".linear.1." in name
                                       or name.endswith((".1.weight",)))
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape,
                                                            generator=g))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g))
            if isinstance(module, HeadAvgLinear):
                for track in module.tracks:
                    track[3].weight.mul_(20.0)
                    track[3].bias[-1] += silence_bias
    return model.eval()
