import pytest
import torch

from models.assignment import PRESETS, architecture_for, parse_assignment
from models.device import resolve_device
from models.zoo import ARCHITECTURES, build_model, count_flops, count_parameters


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_architecture_maps_images_to_logits(name, shape):
    model = build_model(name, shape, 10)
    model.train()
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    out.sum().backward()  # trainable end to end
    assert count_parameters(model) > 0 and count_flops(model, shape) > 0


def test_architectures_are_genuinely_different():
    sizes = {n: count_parameters(build_model(n, (1, 28, 28), 10)) for n in ARCHITECTURES}
    assert len(set(sizes.values())) == len(sizes)
    assert sizes["resnet18"] > 10 * sizes["cnn-small"]


def test_flops_of_a_linear_layer_by_hand():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    assert count_flops(model, (1, 2, 2)) == 12


def test_unknown_architecture_lists_allowed():
    with pytest.raises(ValueError, match="allowed: mlp, cnn-small"):
        build_model("vgg99", (1, 28, 28), 10)


def test_assignments():
    assert parse_assignment("cnn-small") == ("cnn-small",)
    assert parse_assignment("heterogeneous") == PRESETS["heterogeneous"]
    names = parse_assignment("mlp, resnet8")
    assert [architecture_for(i, names) for i in range(3)] == ["mlp", "resnet8", "mlp"]
    assert parse_assignment(["mlp", "mobilenet"]) == ("mlp", "mobilenet")
    with pytest.raises(ValueError, match="'resnet9' is unknown"):
        parse_assignment("mlp,resnet9")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
