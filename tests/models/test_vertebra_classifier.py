"""Stage-2 model: shapes, attention, pretrained option errors, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from cspine.checkpoint import load_weights, save_model
from cspine.errors import CheckpointError
from cspine.models.vertebra_classifier import ClsConfig, build_classifier

TINY = ClsConfig(backbone="test_efficientnet", n_slices=6, k=3, use_mask_channel=True, image_size=32,
                 gru_hidden=8, attn_dim=8, dropout=0.0)


def test_forward_shapes_and_attention_sums_to_one() -> None:
    torch.manual_seed(0)
    model = build_classifier(TINY).eval()
    x = torch.rand(3, TINY.n_slices, TINY.in_chans, 32, 32)
    out = model(x)
    assert out.logit.shape == (3,)
    assert out.slice_logits.shape == (3, TINY.n_slices)
    assert out.attention.shape == (3, TINY.n_slices)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(3))
    assert (out.attention >= 0).all()


def test_in_chans_follows_mask_channel() -> None:
    assert TINY.in_chans == 4
    no_mask = ClsConfig(**{**TINY.__dict__, "use_mask_channel": False, "k": 5})
    assert no_mask.in_chans == 5
    out = build_classifier(no_mask).eval()(torch.rand(1, TINY.n_slices, 5, 32, 32))
    assert out.logit.shape == (1,)


def test_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="B, N, C, H, W"):
        build_classifier(TINY)(torch.rand(2, 4, 32, 32))


def test_checkpoint_round_trip_gives_identical_output(tmp_path) -> None:
    torch.manual_seed(1)
    model = build_classifier(TINY).eval()
    x = torch.rand(2, TINY.n_slices, TINY.in_chans, 32, 32)
    save_model(tmp_path, model, TINY, "vertebra_classifier")
    torch.manual_seed(2)
    other = load_weights(tmp_path, build_classifier(TINY)).eval()
    with torch.no_grad():
        a, b = model(x), other(x)
    torch.testing.assert_close(a.logit, b.logit, rtol=0, atol=0)
    torch.testing.assert_close(a.attention, b.attention, rtol=0, atol=0)


def test_pretrained_from_local_safetensors(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    donor = build_classifier(TINY)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in donor.backbone.state_dict().items()}, str(path))
    model = build_classifier(ClsConfig(**{**TINY.__dict__, "pretrained": str(path)}))
    for k, v in donor.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[k], v)


@pytest.mark.parametrize("value, message", [("/no/such/file.safetensors", "does not exist"),
                                            ("__pickle__", "must be a .safetensors")])
def test_pretrained_bad_path_is_a_clear_error(tmp_path, value, message) -> None:
    if value == "__pickle__":
        value = str(tmp_path / "weights.pth")
        (tmp_path / "weights.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=message):
        build_classifier(ClsConfig(**{**TINY.__dict__, "pretrained": value}))
