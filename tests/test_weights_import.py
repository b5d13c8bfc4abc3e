"""intsr.weights: torch-free import of .pt/.npz weights and of gradient masks."""
import io
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from intsr import weights as W
from intsr.arch import CHANNELS, NUM_LAYERS, layer_shapes

torch = pytest.importorskip("torch")


def _state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((f"convs.{i}.weight",
                        torch.randn(CHANNELS[i + 1], CHANNELS[i], 3, 3, generator=g))
                       for i in range(NUM_LAYERS))


def _hwio(sd):
    return [sd[f"convs.{i}.weight"].numpy().transpose(2, 3, 1, 0) for i in range(NUM_LAYERS)]


def test_torch_save_round_trip_is_exact(tmp_path):
    sd = _state_dict()
    p = tmp_path / "w.pt"
    torch.save(sd, p)
    got = W.load_weights(p)
    for g, want, shp in zip(got, _hwio(sd), layer_shapes(), strict=True):
        assert g.dtype == np.float32 and g.shape == shp
        np.testing.assert_array_equal(g, want)


def test_real_trainer_state_dict_and_checkpoint_and_ddp_prefix(tmp_path):
    from training.net import SRNet
    m = SRNet()
    torch.save(m.state_dict(), tmp_path / "a.pt")
    torch.save({"model": m.state_dict(), "step": 3, "opt": {"lr": 1e-3},
                "torch_rng": torch.get_rng_state()}, tmp_path / "ck.pt")
    torch.save(OrderedDict(("module." + k, v) for k, v in m.state_dict().items()),
               tmp_path / "ddp.pt")
    want = [c.weight.detach().numpy().transpose(2, 3, 1, 0) for c in m.convs]
    for name in ("a.pt", "ck.pt", "ddp.pt"):
        for g, w in zip(W.load_weights(tmp_path / name), want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_non_contiguous_and_shared_storage_tensors(tmp_path):
    sd = _state_dict(1)
    # a transposed view: the stored strides are not the contiguous ones
    sd["convs.1.weight"] = sd["convs.1.weight"].clone().transpose(0, 1).contiguous() \
        .transpose(0, 1)
    big = torch.randn(2 * 64 * 64 * 9)
    sd["convs.2.weight"] = big[64 * 64 * 9:].view(64, 64, 3, 3)  # offset into a shared storage
    sd["convs.3.weight"] = big[:64 * 64 * 9].view(64, 64, 3, 3)
    torch.save(sd, tmp_path / "v.pt")
    for g, w in zip(W.load_weights(tmp_path / "v.pt"), _hwio(sd), strict=True):
        np.testing.assert_array_equal(g, w)


def test_npz_round_trip(tmp_path):
    ws = [np.random.default_rng(i).standard_normal(s).astype(np.float32)
          for i, s in enumerate(layer_shapes())]
    W.save_weights_npz(tmp_path / "w.npz", ws)
    with np.load(tmp_path / "w.npz") as z:
        assert z["conv1"].shape == (64, 3, 3, 3)  # OIHW on disk
    for a, b in zip(W.load_weights(tmp_path / "w.npz"), ws, strict=True):
        np.testing.assert_array_equal(a, b)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalEvil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').write('x')",)


@pytest.mark.parametrize("evil", [_Evil, _EvalEvil])
def test_hostile_pickle_runs_nothing(tmp_path, evil):
    marker = tmp_path / "pwned"
    sd = _state_dict()
    sd["convs.0.weight"] = evil(str(marker))
    torch.save(sd, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="forbidden global"):
        W.load_weights(tmp_path / "evil.pt")
    assert not marker.exists()


def test_hostile_pickle_hand_written_archive(tmp_path):
    marker = tmp_path / "pwned2"
    p = tmp_path / "evil2.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_Evil(str(marker)), protocol=4))
    with pytest.raises(ValueError, match="forbidden global"):
        W.load_weights(p)
    assert not marker.exists()


class _StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def test_tensor_geometry_past_storage_is_refused(tmp_path):
    """A crafted stride must not make the loader read memory outside the storage bytes."""
    numel = 64 * 3 * 9
    st = _StorageRef("0", numel)
    sd = OrderedDict((f"convs.{i}.weight", _FakeTensor(st, 0, (64, 3, 3, 3), (27, 9, 3, 1)))
                     for i in range(NUM_LAYERS))
    sd["convs.0.weight"] = _FakeTensor(st, 0, (64, 3, 3, 3), (10**6, 9, 3, 1))
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(sd)
    p = tmp_path / "geom.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/data/0", np.zeros(numel, "<f4").tobytes())
    with pytest.raises(ValueError, match="past its storage"):
        W.load_weights(p)


def test_malformed_files_raise_one_line_value_errors(tmp_path):
    sd = _state_dict()
    torch.save(sd, tmp_path / "good.pt")
    raw = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a zip at all")
    bad_shape = OrderedDict(sd)
    bad_shape["convs.0.weight"] = torch.zeros(64, 4, 3, 3)
    torch.save(bad_shape, tmp_path / "shape.pt")
    nan = OrderedDict(sd)
    nan["convs.4.weight"] = sd["convs.4.weight"].clone()
    nan["convs.4.weight"][0, 0, 0, 0] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    ints = OrderedDict(sd)
    ints["convs.2.weight"] = torch.zeros(64, 64, 3, 3, dtype=torch.int32)
    torch.save(ints, tmp_path / "int.pt")
    ws = [np.zeros((s[3], s[2], 3, 3), np.float32) for s in layer_shapes()]
    np.savez(tmp_path / "keys.npz", **{f"layer{i}": w for i, w in enumerate(ws)})
    np.savez(tmp_path / "shape.npz", **{f"conv{i + 1}": w.transpose(2, 3, 1, 0)
                                        for i, w in enumerate(ws)})
    ws[7] = ws[7].copy()
    ws[7][0, 0, 0, 0] = np.inf
    np.savez(tmp_path / "inf.npz", **{f"conv{i + 1}": w for i, w in enumerate(ws)})
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "inf.npz").read_bytes()[:100])
    cases = {"trunc.pt": "not a torch", "junk.pt": "not a torch", "shape.pt": "shape",
             "nan.pt": "NaN", "int.pt": "not a float", "keys.npz": "keys",
             "shape.npz": "shape", "inf.npz": "NaN or inf", "trunc.npz": "not a readable",
             "missing.npz": "no such"}
    for name, msg in cases.items():
        with pytest.raises(ValueError, match=msg) as e:
            W.load_weights(tmp_path / name)
        assert "\n" not in str(e.value), name


def _masks():
    rng = np.random.default_rng(0)
    masks = {r: [rng.random(c) < 0.5 for c in CHANNELS[1:-1]] + [np.ones(3, bool)]
             for r in W.MASK_RATIOS.values()}
    return masks, {r: 1000.0 * (1 - r) for r in masks}


def test_masks_round_trip(tmp_path):
    masks, taus = _masks()
    W.save_masks_npz(tmp_path / "m.npz", masks, taus)
    got, got_tau = W.load_masks_with_tau(tmp_path / "m.npz")
    assert set(got) == {0.0, 0.27, 0.5, 0.67, 0.85}
    for r in masks:
        assert got_tau[r] == taus[r]
        for a, b in zip(got[r], masks[r], strict=True):
            assert a.dtype == bool
            np.testing.assert_array_equal(a, b)
    assert set(W.load_masks(tmp_path / "m.npz")) == set(masks)


def test_malformed_masks(tmp_path):
    masks, taus = _masks()
    arrays = {}
    for pct, r in W.MASK_RATIOS.items():
        for layer, m in enumerate(masks[r], 1):
            arrays[f"p{pct}_l{layer}"] = m
        arrays[f"p{pct}_tau"] = np.float64(taus[r])
    bad = dict(arrays)
    del bad["p50_l3"]
    np.savez(tmp_path / "missing.npz", **bad)
    bad = dict(arrays, p27_l8=np.array([True, False, True]))
    np.savez(tmp_path / "last.npz", **bad)
    bad = dict(arrays, p0_l2=np.ones(32, bool))
    np.savez(tmp_path / "shape.npz", **bad)
    bad = dict(arrays, p85_tau=np.float64(np.nan))
    np.savez(tmp_path / "tau.npz", **bad)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    for name, msg in {"missing.npz": "missing", "last.npz": "last layer",
                      "shape.npz": "shape", "tau.npz": "tau", "junk.npz": "readable"}.items():
        with pytest.raises(ValueError, match=msg):
            W.load_masks(tmp_path / name)


def test_intsr_never_imports_torch():
    import subprocess
    import sys
    code = ("import sys, intsr.weights, intsr.pruning, intsr.floatpath.degrade; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _sequential(bias=False, ks=3, channels=CHANNELS):
    layers = []
    for i in range(len(channels) - 1):
        layers.append(torch.nn.Conv2d(channels[i], channels[i + 1], ks, padding=ks // 2,
                                      bias=bias))
        if i < len(channels) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def test_foreign_state_dicts_of_this_architecture_load_by_shape(tmp_path):
    """A user's own PyTorch code: nn.Sequential keys 0.weight, 2.weight, ..., a DDP module.
    prefix, checkpoint dicts holding 'state_dict' or 'model', written by real torch."""
    seq = _sequential()
    sd = seq.state_dict()
    assert list(sd)[:2] == ["0.weight", "2.weight"]
    want = [v.numpy().transpose(2, 3, 1, 0) for v in sd.values()]
    layouts = {"seq.pt": sd,
               "ddp.pt": OrderedDict(("module." + k, v) for k, v in sd.items()),
               "ck_sd.pt": {"state_dict": sd, "epoch": 7, "optimizer": {"lr": 0.1}},
               "ck_model.pt": {"model": OrderedDict(("module." + k, v) for k, v in sd.items())},
               "nested.pt": {"model": {"state_dict": sd}}}
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        for g, w in zip(W.load_weights(tmp_path / name), want, strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("make,needle", [
    (lambda: _sequential(bias=True).state_dict(), "has biases"),
    (lambda: _sequential(ks=5).state_dict(), "layer 1 of this network is OIHW"),
    (lambda: _sequential(channels=(3, 32, 32, 32, 32, 32, 32, 32, 3)).state_dict(),
     "layer 1 of this network"),
    (lambda: _sequential(channels=CHANNELS + (3,)).state_dict(), "9 conv weights"),
    (lambda: OrderedDict(list(_sequential().state_dict().items())[:7]), "7 conv weights"),
    (lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, bias=False),
                                 torch.nn.BatchNorm2d(64, affine=False)).state_dict(),
     "is not a 3x3 conv weight"),
    (lambda: [torch.zeros(3)], "expected a state_dict"),
])
def test_other_networks_get_one_clear_line(tmp_path, make, needle):
    torch.save(make(), tmp_path / "x.pt")
    with pytest.raises(ValueError, match=needle) as e:
        W.load_weights(tmp_path / "x.pt")
    assert "\n" not in str(e.value)
