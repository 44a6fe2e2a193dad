"""The numpy optimisers match torch.optim step for step."""

import numpy as np
import torch

from mobile_peft.runtime.optim import SGD, AdamW, make_optimizer


def _run(ours, theirs_cls, kwargs, steps=6):
    rng = np.random.default_rng(0)
    p0 = {"a": rng.standard_normal((4, 5)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    params = {k: v.copy() for k, v in p0.items()}
    tparams = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in p0.items()}
    topt = theirs_cls(list(tparams.values()), **kwargs)
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p0.items()}
        ours.step(params, grads)
        for k, p in tparams.items():
            p.grad = torch.from_numpy(grads[k].copy())
        topt.step()
    for k in p0:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), atol=1e-6)
    return params


def test_adamw_matches_torch():
    _run(AdamW(1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05), torch.optim.AdamW,
         {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.05, "foreach": False})


def test_sgd_with_momentum_matches_torch():
    _run(SGD(5e-2, momentum=0.9, weight_decay=0.01), torch.optim.SGD, {"lr": 5e-2, "momentum": 0.9, "weight_decay": 0.01})


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    grads = [{"w": rng.standard_normal(8).astype(np.float32)} for _ in range(4)]
    a, pa = AdamW(1e-2), {"w": np.ones(8, np.float32)}
    for g in grads:
        a.step(pa, g)
    b, pb = AdamW(1e-2), {"w": np.ones(8, np.float32)}
    for g in grads[:2]:
        b.step(pb, g)
    c = make_optimizer("adamw", {"lr": 1e-2})
    c.load_state_dict(b.state_dict())
    for g in grads[2:]:
        c.step(pb, g)
    np.testing.assert_array_equal(pa["w"], pb["w"])


def test_executorch_runtime_sgd_matches_numpy_sgd(pte_bundle):
    from mobile_peft.core.datasets import load_dataset
    from mobile_peft.runtime.bundle import Bundle
    from mobile_peft.runtime.engine import PteEngine
    from mobile_peft.runtime.optim import ExecuTorchSGD

    bundle = Bundle.open(pte_bundle)
    encoder = bundle.encoder()
    masks = bundle.schedule.phase_masks(0)
    batches = [encoder.batch(load_dataset("digits:parity", "train", limit=12)[i : i + 4]) for i in (0, 4, 8)]
    runtime, reference = PteEngine(bundle, ExecuTorchSGD(0.05)), PteEngine(bundle, SGD(0.05))
    for batch in batches:
        runtime.forward_backward([*batch, *masks])
        reference.forward_backward([*batch, *masks])
        runtime.step()
        reference.step()
    for name in runtime.names:
        np.testing.assert_allclose(runtime.parameters()[name], reference.parameters()[name], atol=1e-6)
    assert isinstance(make_optimizer("sgd", {"lr": 0.05}, runtime="pte"), ExecuTorchSGD)
    assert isinstance(make_optimizer("sgd", {"lr": 0.05, "momentum": 0.9}, runtime="pte"), SGD)
