"""ExecuTorch bundle: 20 SGD steps in the runtime equal 20 eager steps; rank mask zero = frozen base."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from mobile_peft.adapters import adapter_parameters, apply_adapters, remove_adapters
from mobile_peft.train.job import make_adapter_config

from .conftest import STEPS, TEST_TARGETS, parity_batches

pytest.importorskip("executorch")

from mobile_peft.core import contract  # noqa: E402
from mobile_peft.export.pte import PteTrainer  # noqa: E402
from mobile_peft.export.wrappers import TrainingWrapper  # noqa: E402


def _trainer(bundle) -> PteTrainer:
    return PteTrainer(bundle.path / contract.PTE_FILE, bundle.path / contract.PTD_FILE)


def test_bundle_files_and_ptd_holds_only_adapters(pte_bundle, lora_model):
    model, _ = lora_model
    assert set(pte_bundle.sizes) == {
        contract.PTE_FILE,
        contract.PTD_FILE,
        contract.TOKENIZER_FILE,
        contract.MANIFEST_FILE,
    }
    adapter_bytes = sum(p.numel() * 4 for p in adapter_parameters(model).values())
    # the .ptd holds the adapter tensors (plus a small header), nothing of the backbone
    assert adapter_bytes <= pte_bundle.sizes[contract.PTD_FILE] < adapter_bytes + 16_384
    methods = pte_bundle.manifest["methods"]
    assert methods["train"]["method"] == contract.METHOD_TRAIN and methods["xnnpack"] is True


def test_sgd_parity_with_eager(pte_bundle, lora_model):
    model, tokenizer = lora_model
    lr = pte_bundle.manifest["optimizer"]["lr"]
    eager = copy.deepcopy(model)
    params = adapter_parameters(eager)
    optimizer = torch.optim.SGD(list(params.values()), lr=lr)
    masks = TrainingWrapper(model).example_masks()
    runtime = _trainer(pte_bundle)
    et_losses, eager_losses = [], []
    eager.train()
    for batch in parity_batches(model, tokenizer):
        inputs = (batch["pixel_values"], batch["input_ids"], batch["labels"])
        et_losses.append(runtime.step((*inputs, *masks), lr))
        loss = eager(*inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        eager_losses.append(loss.item())
    assert len(et_losses) == STEPS
    assert et_losses[-1] < et_losses[0]  # it trains
    torch.testing.assert_close(torch.tensor(et_losses), torch.tensor(eager_losses), rtol=1e-4, atol=0)
    trained = runtime.parameters()
    assert set(trained) == {f"model.{n}" for n in params}
    for name, param in params.items():
        torch.testing.assert_close(trained[f"model.{name}"], param.detach(), rtol=1e-4, atol=1e-4)


def test_eval_method_and_zero_masks_give_frozen_backbone(pte_bundle, lora_model):
    model, tokenizer = lora_model
    batch = parity_batches(model, tokenizer, n=1)[0]
    inputs = (batch["pixel_values"], batch["input_ids"], batch["labels"])
    weights = [p.detach() for p in adapter_parameters(model).values()]
    runtime = _trainer(pte_bundle)
    ones = TrainingWrapper(model).example_masks()
    loss, logits = runtime.evaluate((*inputs, *ones), weights)
    with torch.no_grad():
        out = model(*inputs)
    torch.testing.assert_close(logits, out.logits, rtol=1e-4, atol=1e-4)
    assert loss == pytest.approx(float(out.loss), rel=1e-4)

    base = copy.deepcopy(model)
    remove_adapters(base)
    with torch.no_grad():
        frozen = base(*inputs).logits
    zeros = [torch.zeros_like(m) for m in ones]
    _, masked = runtime.evaluate((*inputs, *zeros), weights)
    torch.testing.assert_close(masked, frozen, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits, frozen, atol=1e-3)  # the adapters do matter at mask one
    # and the training graph takes the masks as inputs as well: zero masks -> the frozen loss
    zero_loss = runtime.forward_backward((*inputs, *zeros))
    with torch.no_grad():
        assert zero_loss == pytest.approx(float(base(*inputs).loss), rel=1e-5)


@pytest.mark.slow
def _assert_sgd_parity(model, tokenizer, bundle, steps: int = 5) -> None:
    """``steps`` SGD steps of the bundle's runtime give eager PyTorch's losses (rel 1e-4)."""
    lr = bundle.manifest["optimizer"]["lr"]
    eager = copy.deepcopy(model)
    optimizer = torch.optim.SGD(list(adapter_parameters(eager).values()), lr=lr)
    masks = TrainingWrapper(model).example_masks()
    runtime = _trainer(bundle)
    eager.train()
    for batch in parity_batches(model, tokenizer, n=steps):
        inputs = (batch["pixel_values"], batch["input_ids"], batch["labels"])
        got = runtime.step((*inputs, *masks), lr)
        loss = eager(*inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert got == pytest.approx(loss.item(), rel=1e-4)


def test_hydra_sgd_parity(tmp_path):
    """Hydra (two rank masks per module) through the same pte pipeline (slow: a second export)."""
    from mobile_peft.export import export_bundle

    from .conftest import tiny_with_adapters

    model, tokenizer = tiny_with_adapters("hydra")
    bundle = export_bundle((model, tokenizer), "pte", tmp_path / "b", batch_size=2)
    _assert_sgd_parity(model, tokenizer, bundle)


def _run_graph(ep, inputs) -> list[torch.Tensor]:
    """The program's graph on flat arguments (lifted parameters, buffers and constants, then ``inputs``)."""
    from torch.export.graph_signature import InputKind

    user = iter(inputs)
    args = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            args.append(next(user))
        elif spec.target in ep.state_dict:
            args.append(ep.state_dict[spec.target])
        else:
            args.append(ep.constants[spec.target])
    return [t.detach().clone() for t in ep.graph_module(*args)]


def _count(ep, target) -> int:
    return sum(1 for n in ep.graph_module.graph.nodes if n.op == "call_function" and n.target == target)


def test_siglip_sgd_parity(tmp_path):
    """A SigLIP vision tower (patch convolution, tanh GELU: the rewrites of ``export._rewrites``
    and the XNNPACK activations) with an adapter inside it, so the backward runs through the
    rewritten GELU, and a language model head dequantised in row blocks (as ``smolvlm-256m``'s
    is): the bundle's SGD losses follow eager PyTorch's."""
    from mobile_peft.export import export_bundle
    from mobile_peft.models.io import build_word_tokenizer
    from mobile_peft.models.presets import preset_config
    from mobile_peft.models.vlm import MobileVLM
    from mobile_peft.quant.model import quantize_model

    tokenizer = build_word_tokenizer()
    config = dataclasses.replace(preset_config("tiny", tokenizer.get_vocab_size()), vision_type="siglip", quant="int8")
    torch.manual_seed(0)
    model = MobileVLM(config)
    quantize_model(model, "int8", config.quant_group_size)
    head = model.language_model.lm_head
    head.block_bytes = head.in_features * 4 * -(-head.out_features // 3)
    assert len(head.row_blocks()) == 3
    targets = TEST_TARGETS + r"|vision_tower\.encoder\.layers\.1\.mlp\.fc1"
    apply_adapters(model, make_adapter_config("lora", 4, None, targets))
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.normal_(0, 0.05)
    model.eval()
    bundle = export_bundle((model, tokenizer), "pte", tmp_path / "b", batch_size=2)
    _assert_sgd_parity(model, tokenizer, bundle)


def test_graph_rewrites_keep_every_output(lora_model):
    """pte.simplify composes transpose pairs, turns small powers into products and drops identity
    copies (the softmax outputs autograd saves as aliases): fewer copies and ``pow`` kernels, the
    same loss, gradients and parameters to float rounding."""
    from mobile_peft.export.formats import _io
    from mobile_peft.export.pte import capture, joint_graph, simplify

    model = lora_model[0]
    inputs, _, _ = _io(model, 2, 0, with_weights=False)
    joint = joint_graph(capture(TrainingWrapper(copy.deepcopy(model)), inputs))
    before = _run_graph(joint, inputs)
    permutes, powers = (
        _count(joint, torch.ops.aten.permute.default),
        _count(joint, torch.ops.aten.pow.Tensor_Scalar),
    )
    aliases = _count(joint, torch.ops.aten.alias.default)
    simplify(joint)
    assert _count(joint, torch.ops.aten.permute.default) < permutes
    assert _count(joint, torch.ops.aten.pow.Tensor_Scalar) < powers
    assert aliases and _count(joint, torch.ops.aten.alias.default) < aliases
    after = _run_graph(joint, inputs)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_patch_convolutions_become_matmuls():
    """A convolution whose stride is its kernel (a ViT patch embedding, with or without bias; a
    1x1 conv) becomes a matmul over the patches; a padded 3x3 conv and a strided 2x2-over-3x3
    conv stay. The values match the convolutions, in the training IR (``conv2d``) and in a joint
    graph (``convolution``)."""
    from mobile_peft.export._rewrites import _patch_convs_as_matmuls

    class Convs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = torch.nn.Conv2d(3, 8, 4, stride=4)
            self.patch_no_bias = torch.nn.Conv2d(3, 8, (2, 4), stride=(2, 4), bias=False)
            self.pointwise = torch.nn.Conv2d(8, 5, 1)
            self.padded = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.overlapping = torch.nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            patches = self.patch(x)
            return (self.pointwise(patches).flatten(2).transpose(1, 2), self.patch_no_bias(x),
                    self.padded(x), self.overlapping(x))

    torch.manual_seed(0)
    model, x = Convs(), torch.randn(2, 3, 16, 12)
    convs = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
    for ep in (torch.export.export(model, (x,)), torch.export.export(model, (x,)).run_decompositions()):
        before = ep.module()(x)
        assert sum(_count(ep, op) for op in convs) == 5
        assert _patch_convs_as_matmuls(ep) == 3
        assert sum(_count(ep, op) for op in convs) == 2
        for a, b in zip(ep.module()(x), before):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_tanh_gelu_becomes_a_sigmoid_product():
    """``gelu(x, approximate="tanh")`` becomes ``x * sigmoid(...)`` (the same function), in the
    training IR and in a joint graph with its backward; the exact GELU stays."""
    from mobile_peft.export._rewrites import _tanh_gelus_as_sigmoid

    class Gelus(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(6, 6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.gelu(x @ self.w, approximate="tanh")
            return (torch.nn.functional.gelu(y) * y).sum()

    torch.manual_seed(0)
    x = torch.linspace(-6, 6, 24).reshape(4, 6)
    gelu = torch.ops.aten.gelu.default
    from torch.export.experimental import _export_forward_backward

    for ep in (torch.export.export(Gelus(), (x,)),
               _export_forward_backward(torch.export.export(Gelus(), (x,)).run_decompositions())):
        before = _run_graph(ep, (x,))
        assert _count(ep, gelu) == 2
        assert _tanh_gelus_as_sigmoid(ep) == 1
        assert _count(ep, gelu) == 1
        after = _run_graph(ep, (x,))
        assert len(after) == len(before) > 0
        for a, b in zip(after, before):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_identity_copies_dropped_only_where_the_layout_and_the_outputs_allow():
    """``alias``/``clone``/``expand`` that return their input's layout go; a clone to another
    layout, an expand that broadcasts and a copy the graph returns stay; a mutating graph is left
    alone. The outputs are bit-equal."""
    from mobile_peft.export._rewrites import _drop_identity_copies

    class Copies(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            a = torch.softmax(x, -1)
            same = torch.ops.aten.alias(a) + a.clone() + a.expand(4, 8)  # identities: dropped
            t = a.t().clone(memory_format=torch.contiguous_format)  # another layout: kept
            wide = a[:1].expand(4, 8)  # broadcasts: kept
            return same, t * 2, wide * 1, x.clone()  # an output: kept

    x = torch.randn(4, 8)
    ep = torch.export.export(Copies(), (x,))
    kinds = (torch.ops.aten.alias.default, torch.ops.aten.clone.default, torch.ops.aten.expand.default)
    before, counts = ep.module()(x), [_count(ep, k) for k in kinds]
    assert _drop_identity_copies(ep) == 3
    assert [_count(ep, k) for k in kinds] == [counts[0] - 1, counts[1] - 1, counts[2] - 1]
    for a, b in zip(ep.module()(x), before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    class Twice(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clone() * 2

    # A write into the copy (torch.export functionalises an in-place op away; a hand-made one stays).
    writes = torch.export.export(Twice(), (x,))
    clone = next(n for n in writes.graph.nodes if n.target == torch.ops.aten.clone.default)
    with writes.graph.inserting_after(clone):
        writes.graph.call_function(torch.ops.aten.add_.Tensor, (clone, 1))
    assert _drop_identity_copies(writes) == 0
    assert _count(writes, torch.ops.aten.clone.default) == 1


def test_recompute_frozen_lowers_the_peak_and_keeps_every_output():
    """pte.recompute_frozen: the backward recomputes dequantised frozen weights instead of keeping
    them alive from the forward; the graph's liveness peak drops, every output stays bit-equal
    (the same ops on the same values), and what it recomputes depends on frozen inputs only."""
    from mobile_peft.adapters import apply_adapters
    from mobile_peft.export import _recompute, pte
    from mobile_peft.export.formats import _io
    from mobile_peft.models import build_model
    from mobile_peft.train.job import make_adapter_config

    model, _ = build_model("tiny", quant="int8", seed=0)  # adapters on every layer: a long backward
    apply_adapters(model, make_adapter_config("lora", 4, None, model.config.default_targets))
    inputs, _, _ = _io(model, 2, 0, with_weights=False)
    joint = pte.joint_graph(pte.capture(TrainingWrapper(model), inputs))

    def peak(ep):
        nodes = list(ep.graph_module.graph.nodes)
        return int(_recompute._liveness(nodes, {n: i for i, n in enumerate(nodes)}).max())

    before_peak, before = peak(joint), _run_graph(joint, inputs)
    assert pte.recompute_frozen(joint) > 0
    assert peak(joint) < before_peak
    after = _run_graph(joint, inputs)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    from torch.export.graph_signature import InputKind, OutputKind

    sig = joint.graph_signature
    frozen = {n.name for n in _recompute._frozen_values(joint) if n.op == "placeholder"}
    graded = {s.target for s in sig.output_specs if s.kind == OutputKind.GRADIENT_TO_PARAMETER}
    moving = {s.arg.name for s in sig.input_specs if s.kind == InputKind.USER_INPUT or s.target in graded}
    assert frozen and len(moving) > len(inputs) and not frozen & moving


def test_recompute_activations_lowers_the_peak_and_keeps_every_output():
    """pte.recompute_activations: the backward recomputes attention's softmax (and other cheap
    activations) from values it still holds instead of keeping them from the forward; the
    liveness peak (views extend their base) drops and every output stays bit-equal."""
    from mobile_peft.adapters import apply_adapters
    from mobile_peft.export import _recompute, pte
    from mobile_peft.export.formats import _io
    from mobile_peft.models import build_model
    from mobile_peft.train.job import make_adapter_config

    model, _ = build_model("tiny", quant="int8", seed=0)
    apply_adapters(model, make_adapter_config("lora", 4, None, model.config.default_targets))
    inputs, _, _ = _io(model, 8, 0, with_weights=False)
    joint = pte.simplify(pte.joint_graph(pte.capture(TrainingWrapper(model), inputs)))

    def peak(ep):
        nodes = list(ep.graph_module.graph.nodes)
        return int(_recompute._storage_liveness(nodes, {n: i for i, n in enumerate(nodes)}).max())

    softmax = torch.ops.aten._softmax.default
    before_peak, before, softmaxes = peak(joint), _run_graph(joint, inputs), _count(joint, softmax)
    assert pte.recompute_activations(joint) > 0
    assert _count(joint, softmax) > softmaxes  # attention probabilities recomputed in the backward
    assert peak(joint) < before_peak
    after = _run_graph(joint, inputs)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_op_profile_names_the_kernels(pte_bundle):
    """The ETDump profile behind ``bench levers``: per-kernel time inside the method's time."""
    from mobile_peft.bench.levers import op_profile
    from mobile_peft.core.datasets import load_dataset
    from mobile_peft.runtime.bundle import Bundle

    bundle = Bundle.open(pte_bundle.path)
    arrays = bundle.encoder().batch(load_dataset("digits:parity", "train", limit=2))
    profile = op_profile(pte_bundle.path, [*arrays, *bundle.schedule.phase_masks(0)], steps=2)
    assert profile["steps"] == 3
    assert 0 < profile["kernels_ms"] <= profile["method_ms"]
    names = {o["op"] for o in profile["ops"]}
    assert any(n.startswith("native_call_") for n in names)
    assert any(o["delegated"] for o in profile["ops"])  # the XNNPACK matmuls
    assert all(o["ms_per_step"] >= 0 and o["calls_per_step"] >= 1 for o in profile["ops"])
