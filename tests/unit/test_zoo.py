"""pixelrobust.zoo: architectures of public checkpoints no dependency provides (the EhanW CIFAR ResNets)."""

from __future__ import annotations

import torch


def test_ehanw_resnet_is_the_built_in_cifar_resnet_with_conv_shortcuts():
    """zoo.ehanw rewrites EhanW's key layout; as a function it must be CifarResNet(depth, classes, "B"):
    random weights mapped in order give the same logits (a changed block, stride or shortcut fails)."""
    from pixelrobust.models import CifarResNet
    from pixelrobust.zoo.ehanw import resnet20

    torch.manual_seed(0)
    ehanw = resnet20().eval()
    for m in ehanw.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    built_in = CifarResNet(20, 10, "B").eval()
    ours, theirs = built_in.state_dict(), ehanw.state_dict()
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
    built_in.load_state_dict(dict(zip(ours, theirs.values())))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(built_in(x), ehanw(x), rtol=1e-5, atol=1e-5)
