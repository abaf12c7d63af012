"""Weight initialization schemes (seed 000/002/004) applied layer by layer.

Each linear or convolutional layer's nonlinearity is the first activation module that follows
it; the head (no activation after it) is `linear`. Kaiming uses that nonlinearity; `gain = "auto"`
gives xavier/lecun/orthogonal the activation's recommended gain. Biases are zero by default.
`pytorch` (the default) is PyTorch's own scheme for linear and convolutional layers, drawn again
from the run's seeded init stream, so a recipe and seed give the same network whatever the global
generator's state when it is built.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Nonlinearity names understood by torch.nn.init.calculate_gain. ELU, GELU and SiLU have no
# entry there; they behave like ReLU for positive inputs and take its gain (sqrt 2).
_NONLINEARITY = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
                 nn.SELU: "selu", nn.ELU: "relu", nn.GELU: "relu", nn.SiLU: "relu", nn.Identity: "linear"}
_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_nonlinearities(model: nn.Module) -> list[tuple[str, nn.Module, str, float]]:
    """(name, layer, nonlinearity, negative_slope) for every weighted layer, in module order."""
    rows: list[dict] = []
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHTED):
            rows.append({"name": name, "layer": module, "nl": "linear", "slope": 0.0, "open": True})
        elif type(module) in _NONLINEARITY and rows and rows[-1]["open"]:
            rows[-1].update(nl=_NONLINEARITY[type(module)], open=False,
                            slope=float(getattr(module, "negative_slope", 0.0)))
    return [(r["name"], r["layer"], r["nl"], r["slope"]) for r in rows]


def fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def init_weight_(w: torch.Tensor, scheme: str, *, nonlinearity: str = "linear", negative_slope: float = 0.0,
                 gain: float | str = 1.0, mode: str = "fan_in", std: float = 0.01, mean: float = 0.0,
                 a: float = -0.05, b: float = 0.05, value: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Initialize one weight tensor in place with `scheme`; returns it."""
    if gain == "auto":
        gain = nn.init.calculate_gain(nonlinearity, negative_slope if nonlinearity == "leaky_relu" else None)
    g = generator
    with torch.no_grad():
        if scheme == "pytorch":         # nn.Linear's and nn.ConvNd's reset_parameters: U(+-1/sqrt(fan_in))
            return nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
        if scheme == "zeros":
            return w.zero_()
        if scheme == "constant":
            return w.fill_(value)
        if scheme == "normal":
            return nn.init.normal_(w, mean, std, generator=g)
        if scheme == "uniform":
            return nn.init.uniform_(w, a, b, generator=g)
        if scheme == "xavier_normal":
            return nn.init.xavier_normal_(w, gain, generator=g)
        if scheme == "xavier_uniform":
            return nn.init.xavier_uniform_(w, gain, generator=g)
        if scheme in ("kaiming_normal", "kaiming_uniform"):
            fn = nn.init.kaiming_normal_ if scheme == "kaiming_normal" else nn.init.kaiming_uniform_
            nl = nonlinearity if nonlinearity in ("relu", "leaky_relu", "tanh", "sigmoid", "selu") else "linear"
            return fn(w, a=negative_slope, mode=mode, nonlinearity=nl, generator=g)
        if scheme in ("lecun_normal", "lecun_uniform"):
            fan = fans(w)[0 if mode == "fan_in" else 1]
            sigma = float(gain) / math.sqrt(fan)
            if scheme == "lecun_normal":
                return nn.init.normal_(w, 0.0, sigma, generator=g)
            return nn.init.uniform_(w, -math.sqrt(3) * sigma, math.sqrt(3) * sigma, generator=g)
        if scheme == "orthogonal":
            return nn.init.orthogonal_(w, float(gain), generator=g)
    raise ValueError(f"unknown init scheme {scheme!r}")


INITIALIZERS = ("pytorch", "zeros", "constant", "normal", "uniform", "xavier_normal", "xavier_uniform",
                "kaiming_normal", "kaiming_uniform", "lecun_normal", "lecun_uniform", "orthogonal")


def init_model_(model: nn.Module, section, generator: torch.Generator | None = None) -> nn.Module:
    """Apply the recipe's [init] section to every linear/conv layer of `model`."""
    for _, layer, nonlinearity, slope in layer_nonlinearities(model):
        init_weight_(layer.weight, section.weights, nonlinearity=nonlinearity, negative_slope=slope,
                     gain=section.gain, mode=section.mode, std=section.std, mean=section.mean,
                     a=section.a, b=section.b, value=section.value, generator=generator)
        if layer.bias is None:
            continue
        with torch.no_grad():
            if section.bias == "pytorch":       # PyTorch's own: U(+-1/sqrt(fan_in)), from the same stream
                fan_in = fans(layer.weight)[0]
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
            else:
                layer.bias.fill_(section.bias_value if section.bias == "constant" else 0.0)
    return model
