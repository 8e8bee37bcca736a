"""Tiny networks for the engine tests, exported like the project's exporter does (ONNX + .pt2 + ModelInfo)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from engines.base import ModelInfo
from engines.metadata import pt2_extra_files, write_onnx_info
from engines.model_digest import write_digests

CROP = 16


class TinyGenerator(torch.nn.Module):
    """image (N,3,S,S) + mask (N,1,S,S) -> restored (N,3,S,S), a few convs and a sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(torch.cat([image * (1 - mask), mask], dim=1)))
        return torch.sigmoid(self.c2(x))


class TinyDetector(torch.nn.Module):
    """image (N,3,S,S) -> mask (N,1,S,S)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.c2(torch.relu(self.c1(image))))


class TinyAttention(torch.nn.Module):
    """A conv + batched self-attention block, to check which nodes the fp16 build pins to fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.out = torch.nn.Conv2d(8, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv(image)
        n, c, h, w = x.shape
        q = x.flatten(2).transpose(1, 2)
        attn = torch.softmax((q @ q.transpose(1, 2)) * (c**-0.5), dim=-1)
        y = (attn @ q).transpose(1, 2).reshape(n, c, h, w)
        return torch.sigmoid(self.out(y))


@dataclass(frozen=True)
class Exported:
    onnx: Path
    pt2: Path
    info: ModelInfo
    module: torch.nn.Module


def export(
    module: torch.nn.Module,
    directory: Path,
    name: str,
    info: ModelInfo,
    inputs: dict[str, tuple[int, ...]],
    output: str,
) -> Exported:
    torch.manual_seed(0)
    module = module.eval()
    example = tuple(torch.rand(2, *shape) for shape in inputs.values())
    onnx_path = directory / f"{name}.onnx"
    axes = {k: {0: "batch"} for k in [*inputs, output]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            module,
            example,
            str(onnx_path),
            dynamo=False,
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
        )
    write_onnx_info(onnx_path, info)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, example, dynamic_shapes={k: {0: batch} for k in inputs})
    pt2_path = directory / f"{name}.pt2"
    torch.export.save(program, str(pt2_path), extra_files=pt2_extra_files(info))
    write_digests([pt2_path])  # as training.export does: the torch backends load only listed .pt2
    return Exported(onnx_path, pt2_path, info, module)
