"""The shift app's training loop on D2L's ladder: the folded rung trains exactly like the conv rung (SHIFT-4), and
the helpers that measure accuracy under shifts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv import fold_weight
from foldconv.analysis.shift import ladder_models
from foldconv.errors import FoldError
from foldconv.experiments.shift import accuracy, shift_images, train_classifier


@pytest.mark.claim("SHIFT-4")
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_folded_rung_tracks_the_conv_rung_step_by_step(optimizer):
    rungs = ladder_models(image_size=16, r=4, channels=3, kernel=3, classes=4, seed=1, dtype=torch.float64)
    conv, folded = rungs["conv"], rungs["folded"]
    gen = torch.Generator().manual_seed(5)
    x, y = torch.rand(24, 1, 16, 16, generator=gen, dtype=torch.float64), torch.randint(0, 4, (24,), generator=gen)
    for step in range(2):
        a = train_classifier(conv, x, y, epochs=1, batch_size=8, lr=0.05, seed=step, optimizer=optimizer)
        b = train_classifier(folded, x, y, epochs=1, batch_size=8, lr=0.05, seed=step, optimizer=optimizer)
        moved = fold_weight(conv[1].weight.detach(), 4).weight
        assert (moved - folded[0].weight.detach()).abs().max() < 1e-12
        assert max(abs(p - q) for p, q in zip(a.losses, b.losses)) < 1e-12
    assert (moved - fold_weight(ladder_models(image_size=16, r=4, channels=3, kernel=3, classes=4, seed=1,
                                              dtype=torch.float64)["conv"][1].weight.detach(), 4).weight).abs().max() > 1e-3
    assert torch.allclose(conv(x), folded(x), atol=1e-12, rtol=0)


def test_shift_images_and_accuracy():
    x = torch.arange(16.).reshape(1, 1, 4, 4)
    assert torch.equal(shift_images(shift_images(x, (1, -2)), (-1, 2))[..., :3, 2:], x[..., :3, 2:])
    assert shift_images(x, (0, 4)).abs().sum() == 0
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert accuracy(net, x, net(x).argmax(dim=1)) == 1.0
    with pytest.raises(FoldError, match="image_size="):
        ladder_models(image_size=30, r=4)
    with pytest.raises(FoldError, match="optimizer="):
        train_classifier(net, x, torch.tensor([0]), epochs=1, batch_size=1, lr=0.1, seed=0, optimizer="lbfgs")
