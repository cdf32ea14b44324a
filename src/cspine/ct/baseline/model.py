"""The one-stage model: stage 2's per-slice CNN and BiGRU with one attention and one logit per level.

It is :class:`~cspine.models.vertebra_classifier.VertebraClassifier` (same backbone factory, same
GRU, same attention MLP shape, same per-slice auxiliary head) with the last layers widened from one
output to seven, one per vertebra C1..C7:

* attention: the MLP scores each slice once per level (``(B, N, 7)``), softmax over the slices, so each
  level pools the GRU states where it finds its own evidence (stage 2 gets this for free from its crop);
* head: one linear read-out per level of that level's pooled state (``(B, 7)`` logits);
* slice heads: unchanged, one logit per slice ("a fracture is on this slice", any level), after the
  GRU and (when ``cfg.feature_slice_head``) on the CNN features.

The patient probability is not a network output: as in stage 2 it is the calibrated noisy-OR of the
seven calibrated level probabilities (:mod:`cspine.ct.cls.calibrate`), so both systems differ only in
what the network sees.
"""

from __future__ import annotations

import torch
from torch import nn

from cspine.labels import VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig, ClsOutput, VertebraClassifier

KIND = "study_classifier"


class StudyClassifier(VertebraClassifier):
    """Per-slice CNN -> BiGRU over the study's slices -> per-level attention -> C1..C7 logits."""

    def __init__(self, cfg: ClsConfig, n_levels: int = len(VERTEBRAE)) -> None:
        super().__init__(cfg)
        hid = 2 * cfg.gru_hidden
        self.n_levels = n_levels
        self.attn = nn.Sequential(nn.Linear(hid, cfg.attn_dim), nn.Tanh(), nn.Linear(cfg.attn_dim, n_levels))
        self.head = None  # replaced by one read-out per level
        self.level_weight = nn.Parameter(torch.empty(n_levels, hid))
        self.level_bias = nn.Parameter(torch.zeros(n_levels))
        nn.init.uniform_(self.level_weight, -hid ** -0.5, hid ** -0.5)  # nn.Linear's default range

    def forward(self, x: torch.Tensor) -> ClsOutput:
        """Classify a batch of study stacks.

        Args:
            x: ``(B, N, C, H, W)`` float study stacks.

        Returns:
            stage 2's :class:`ClsOutput` with ``logit`` ``(B, 7)`` (C1..C7), ``slice_logits`` ``(B, N)``,
            ``attention`` ``(B, N, 7)`` (each level's column sums to 1 over the slices) and, when the
            config asks for it, ``feature_slice_logits`` ``(B, N)``.
        """
        if x.ndim != 5:
            raise ValueError(f"expected (B, N, C, H, W), got shape {tuple(x.shape)}")
        b, n = x.shape[:2]
        feats = self.backbone(x.flatten(0, 1)).reshape(b, n, -1)
        states, _ = self.gru(self.drop(feats).float())
        attention = torch.softmax(self.attn(states).float(), dim=1)  # (B, N, L)
        pooled = torch.einsum("bnl,bnh->blh", attention, states)
        logit = (self.drop(pooled) * self.level_weight).sum(-1) + self.level_bias
        slice_logits = self.slice_head(states).squeeze(-1)
        out = ClsOutput(logit=logit, slice_logits=slice_logits, attention=attention)
        feature_head = getattr(self, "feature_head", None)  # stage 2's optional CNN-feature slice head
        if feature_head is not None:
            out.feature_slice_logits = feature_head(feats.float()).squeeze(-1)
        return out


def build_study_classifier(cfg: ClsConfig) -> StudyClassifier:
    """The one-stage model for ``cfg`` (``cfg.n_slices`` = slices over the whole study)."""
    return StudyClassifier(cfg)
