"""Independent reference code the tests compare against."""

from torch import nn


class OfficialEcaLayer(nn.Module):
    """The forward of BangguWu/ECANet's eca_layer, verbatim in substance."""

    def __init__(self, k_size):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


def use_official_eca(model: nn.Module) -> nn.Module:
    """Swap every EcaLayer for the official forward, weights kept: the graph a naive export produces."""
    from eca_deploy.models import EcaLayer
    from eca_deploy.models.loader import replace_module

    for name, module in list(model.named_modules()):
        if isinstance(module, EcaLayer):
            official = OfficialEcaLayer(module.k_size)
            official.load_state_dict(module.state_dict())
            replace_module(model, name, official)
    return model
