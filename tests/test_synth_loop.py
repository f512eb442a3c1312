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
    # z' equals z bit for bit on every kept dim and differs on every selected one
    mask, source = out.selection.mask, out.features[out.subset]
    assert torch.equal(out.perturbed[:, ~mask], source[:, ~mask])
    assert (out.perturbed[:, mask] != source[:, mask]).all()
    # and the pair is exactly (D(z), D(z')) of those two feature rows
    with torch.no_grad():
        assert torch.allclose(view_a, synth.decoder(source), atol=1e-6)
        assert torch.allclose(view_b, synth.decoder(out.perturbed), atol=1e-6)


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


def _importance_and_encoder_grad(recon_to_encoder: bool, alpha: float) -> tuple:
    torch.manual_seed(1)
    encoder = Encoder()
    config = FGSynthConfig(decoder_width=8, recon_to_encoder=recon_to_encoder, alpha=alpha)
    synth = FGSynth(16, 16, config).attach(encoder.layer4)
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    with synth.capture():
        z1, z2 = encoder(x1), encoder(x2)
    out = synth(torch.cat([z1, z2]), torch.cat([x1, x2]), epoch=0)
    synth.total_loss(_ssl_loss(z1, z2), out.recon_loss, None).backward()
    synth.update_statistics()
    return synth.statistics.importance.clone(), encoder.layer4[0].weight.grad.clone()


def test_recon_to_encoder_trains_the_encoder_but_leaves_the_gradcam_importance_alone() -> None:
    detached_importance, detached_grad = _importance_and_encoder_grad(False, alpha=0.5)
    ssl_only_importance, ssl_only_grad = _importance_and_encoder_grad(False, alpha=0.0)
    importance, grad = _importance_and_encoder_grad(True, alpha=0.5)
    assert torch.equal(detached_grad, ssl_only_grad)  # default: L_R never reaches the encoder
    assert not torch.allclose(grad, ssl_only_grad)  # recon_to_encoder: it does
    assert torch.allclose(importance, ssl_only_importance, rtol=1e-6, atol=1e-9)
    assert torch.equal(detached_importance, ssl_only_importance)


def test_recon_to_encoder_gives_the_reconstruction_gradient_of_the_plain_decoder_input() -> None:
    encoder = Encoder()
    synth = FGSynth(16, 16, FGSynthConfig(decoder_width=8, recon_to_encoder=True))
    synth.attach(encoder.layer4)
    x = torch.randn(4, 3, 16, 16)
    with synth.capture():
        z = encoder(x)
    synth(z, x, epoch=0).recon_loss.backward()
    through_branch = encoder.layer4[0].weight.grad.clone()
    encoder.zero_grad()
    synth.decoder.zero_grad()
    from solo_fgsynth.synth import reconstruction_loss

    reconstruction_loss(synth.decoder(encoder(x)), x).backward()
    assert torch.allclose(through_branch, encoder.layer4[0].weight.grad, atol=1e-7)


def test_frozen_batchnorm_statistics_keeps_buffers_and_normalises_with_batch_statistics() -> None:
    from solo_fgsynth.synth import frozen_batchnorm_statistics

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm1d(4).eval())
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    reference.load_state_dict(net[:2].state_dict())
    before = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    x = torch.randn(5, 3, 6, 6)
    with frozen_batchnorm_statistics(net):
        frozen_out = net[:2](x)
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert torch.equal(frozen_out, reference(x))  # train-mode: the batch's own statistics
    assert int(reference[1].num_batches_tracked) == 1
    assert net[1].track_running_stats and net[2].track_running_stats
