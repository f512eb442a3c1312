"""FGSynth in a plain loop: the README example runs, one backward per step, pairs as promised."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from solo_fgsynth import FGSynth, FGSynthConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (example,) = [block for block in blocks if "synth.update_statistics()" in block]
    return example


def test_readme_plain_loop_example_runs_and_synthesizes_pairs() -> None:
    namespace: dict = {}
    exec(compile(_readme_example(), str(README), "exec"), namespace)
    synth = namespace["synth"]
    assert int(synth.statistics.variance_updates) == 6
    assert int(synth.statistics.importance_updates) == 6
    assert namespace["pair_loss"] is not None and torch.isfinite(namespace["loss"])


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, stride=2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def _ssl_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().sum(1).mean()


def _step(encoder: Encoder, synth: FGSynth, epoch: int) -> tuple:
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    with synth.capture():
        z1, z2 = encoder(x1), encoder(x2)
    out = synth(torch.cat([z1, z2]), torch.cat([x1, x2]), epoch=epoch)
    pair_loss = None if out.pair is None else _ssl_loss(encoder(out.pair[0]), encoder(out.pair[1]))
    loss = synth.total_loss(_ssl_loss(z1, z2), out.recon_loss, pair_loss)
    loss.backward()
    synth.update_statistics()
    return out, loss


def test_a_training_step_does_exactly_one_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"backward": 0, "grad": 0}
    real_backward, real_grad = torch.autograd.backward, torch.autograd.grad

    def counting_backward(*args, **kwargs):
        calls["backward"] += 1
        return real_backward(*args, **kwargs)

    def counting_grad(*args, **kwargs):
        calls["grad"] += 1
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "backward", counting_backward)
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    encoder = Encoder()
    synth = FGSynth(16, 16, FGSynthConfig(synth_start_epoch=0, decoder_width=8)).attach(
        encoder.layer4
    )
    _step(encoder, synth, epoch=0)  # statistics now exist: the next step synthesizes
    calls.update(backward=0, grad=0)
    out, _ = _step(encoder, synth, epoch=0)
    assert out.pair is not None
    assert calls == {"backward": 1, "grad": 0}
    assert int(synth.statistics.importance_updates) == 2


def test_pairs_follow_synth_fraction_start_epoch_and_differ_only_in_selected_dims() -> None:
    encoder = Encoder()
    config = FGSynthConfig(synth_start_epoch=2, synth_fraction=0.25, decoder_width=8)
    synth = FGSynth(16, 16, config).attach(encoder.layer4)
    out, _ = _step(encoder, synth, epoch=0)
    assert out.pair is None and out.metrics() == {}  # no statistics yet
    out, _ = _step(encoder, synth, epoch=1)
    assert out.pair is None  # statistics exist, but before synth_start_epoch
    out, _ = _step(encoder, synth, epoch=2)
    assert out.pair is not None
    view_a, view_b = out.pair
    assert view_a.shape == view_b.shape == (3, 3, 16, 16)  # round(0.25 * 12) rows
    assert not view_a.requires_grad and not view_b.requires_grad
    assert out.metrics()["synth_selected_dims"] == out.selection.size > 0


def test_synth_grad_to_decoder_lets_the_pair_loss_train_the_decoder() -> None:
    encoder = Encoder()
    config = FGSynthConfig(
        synth_start_epoch=0, synth_fraction=0.5, synth_grad_to_decoder=True, decoder_width=8
    )
    synth = FGSynth(16, 16, config).attach(encoder.layer4)
    _step(encoder, synth, epoch=0)
    x = torch.randn(4, 3, 16, 16)
    with synth.capture():
        z = encoder(x)
    out = synth(z, x, epoch=0)
    assert out.pair is not None and out.pair[1].requires_grad
    synth.zero_grad()
    _ssl_loss(encoder(out.pair[0]), encoder(out.pair[1])).backward()
    assert synth.decoder.head.weight.grad is not None


def test_the_reconstruction_loss_does_not_reach_the_encoder() -> None:
    encoder = Encoder()
    synth = FGSynth(16, 16, FGSynthConfig(decoder_width=8)).attach(encoder.layer4)
    x = torch.randn(4, 3, 16, 16)
    with synth.capture():
        z = encoder(x)
    synth(z, x, epoch=0).recon_loss.backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert synth.decoder.head.weight.grad is not None


def test_mismatched_inputs_are_rejected() -> None:
    synth = FGSynth(16, 16, FGSynthConfig(decoder_width=8))
    with pytest.raises(ValueError, match=r"expected \(B, 16\)"):
        synth(torch.randn(4, 8), torch.randn(4, 3, 16, 16), epoch=0)
    with pytest.raises(ValueError, match="3 views for 4 feature rows"):
        synth(torch.randn(4, 16), torch.randn(3, 3, 16, 16), epoch=0)
