"""Checkpoint registry, verified cached download, file formats, strict loading, create_model.

Every file is made here from a tiny DPT; downloads come from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dpt_ros.model import DPT, MODEL_NAMES, DPTConfig, model_config
from dpt_ros.model.factory import PluginError, create_model
from dpt_ros.model.weights import (
    REGISTRY,
    WEIGHTS_DIR_ENV,
    Checkpoint,
    WeightsError,
    fetch_checkpoint,
    guess_variants,
    hash_prefix_from_name,
    load_into,
    load_model,
    read_state_dict,
)

TINY = DPTConfig(
    embed_dim=64,
    depth=4,
    num_heads=4,
    hooks=(0, 1, 2, 3),
    stage_channels=(16, 32, 64, 64),
    features=32,
    pretrain_size=64,
    vit_num_classes=10,
)


@pytest.fixture(scope="module")
def tiny_model() -> DPT:
    torch.manual_seed(0)
    return DPT(TINY).eval()


@pytest.fixture
def tiny_pt(tmp_path: Path, tiny_model: DPT) -> Path:
    path = tmp_path / "tiny.pt"
    torch.save(tiny_model.state_dict(), path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path):
    """(served folder, base URL, list of request paths) of a server on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def _closed_port_url(file_name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{file_name}"


# --------------------------------------------------------------------------- registry


def test_registry_entries_are_well_formed() -> None:
    assert len(REGISTRY) == 6
    assert len({c.file_name for c in REGISTRY.values()}) == len(REGISTRY)
    for name, entry in REGISTRY.items():
        assert entry.name == name
        assert entry.model in MODEL_NAMES
        assert hash_prefix_from_name(entry.file_name) == entry.sha256
        assert len(entry.sha256) == 8 and int(entry.sha256, 16) >= 0
        assert all(
            u.startswith("https://") and u.endswith("/" + entry.file_name) for u in entry.urls
        )
        config = model_config(entry.model)
        assert entry.task == config.task
        assert entry.output_semantics == config.output_semantics


def test_hash_prefix_from_name() -> None:
    assert hash_prefix_from_name("dpt_hybrid-midas-501f0c75.pt") == "501f0c75"
    assert hash_prefix_from_name("dpt_hybrid_kitti-cb926ef4.pt") == "cb926ef4"
    assert hash_prefix_from_name("https://x/y/model-0123abcd.safetensors") == "0123abcd"
    assert hash_prefix_from_name("dpt_large_384.pt") is None


def test_model_without_release_says_so() -> None:
    with pytest.raises(WeightsError, match="released no checkpoint for 'dpt_base'.*random"):
        create_model("dpt_base")


# --------------------------------------------------------------------------- reading files


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_local_file(tmp_path: Path, tiny_model: DPT, suffix: str) -> None:
    path = tmp_path / f"tiny{suffix}"
    state = tiny_model.state_dict()
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_model(path, model=TINY)
    assert not loaded.training
    _assert_same_weights(loaded, tiny_model)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_model(x))


def test_nested_training_checkpoint_with_module_prefix(tmp_path: Path, tiny_model: DPT) -> None:
    path = tmp_path / "train.pt"
    wrapped = {f"module.{k}": v for k, v in tiny_model.state_dict().items()}
    torch.save({"model": wrapped, "optimizer": {"lr": 0.1, "step": 3}, "epoch": 7}, path)
    _assert_same_weights(load_model(path, model=TINY), tiny_model)
    torch.save({"state_dict": tiny_model.state_dict()}, path)
    assert read_state_dict(path).keys() == tiny_model.state_dict().keys()


class Payload:
    """Stands for arbitrary code in a pickle: weights-only loading must never rebuild it."""

    rebuilt = False

    def __setstate__(self, state: dict) -> None:
        Payload.rebuilt = True


def test_pickled_object_is_refused(tmp_path: Path, tiny_model: DPT) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weights": tiny_model.state_dict(), "payload": Payload()}, path)
    with pytest.raises(WeightsError, match=r"pickled Python object \(.*Payload\).*weights_only"):
        load_model(path, model=TINY)
    assert not Payload.rebuilt


def test_non_tensor_entries_and_non_dicts_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"w": torch.zeros(2), "epoch": 3}, path)
    with pytest.raises(WeightsError, match="1 entries are not tensors.*epoch"):
        read_state_dict(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("name", "message"),
    [("junk.pt", "not a PyTorch checkpoint|cannot be read"), ("junk.safetensors", "safetensors")],
)
def test_unreadable_files(tmp_path: Path, name: str, message: str) -> None:
    # Garbage makes the unpickler fail in many different ways: try a few fixed payloads.
    rng = np.random.default_rng(0)
    payloads = [rng.bytes(4096) for _ in range(64)] + [b"", b"PK\x03\x04", b"\x80\x02]q\x00."]
    path = tmp_path / name
    for payload in payloads:
        path.write_bytes(payload)
        with pytest.raises(WeightsError, match=message):
            read_state_dict(path)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match=f"checkpoint not found: {missing}"):
        load_model(missing)
    with pytest.raises(WeightsError, match="checkpoint file not found"):
        read_state_dict(missing)


# --------------------------------------------------------------------------- wrong variant


def test_wrong_variant_names_keys_and_shapes(tmp_path: Path) -> None:
    deeper = dataclasses.replace(TINY, depth=5, hooks=(0, 1, 2, 4))
    wider = dataclasses.replace(TINY, stage_channels=(16, 32, 64, 128))
    path = tmp_path / "deeper.pt"
    torch.save(DPT(deeper).state_dict(), path)

    with pytest.raises(WeightsError) as info:
        load_model(path, model=wider)
    text = str(info.value)
    assert "12 unexpected keys, e.g. pretrained.model.blocks.4.attn.proj.bias" in text
    assert (
        "shape differences: pretrained.act_postprocess4.3.bias: checkpoint [64] vs model [128]"
        in text
    )
    assert "closest is" in text

    with pytest.raises(WeightsError, match="12 missing keys, e.g. pretrained.model.blocks.4."):
        load_into(DPT(deeper), DPT(TINY).state_dict(), source="tiny")


def test_variant_is_recognised_from_keys_and_shapes() -> None:
    def meta_state(name: str) -> dict[str, torch.Tensor]:
        with torch.device("meta"):
            return DPT(model_config(name)).state_dict()

    assert guess_variants(meta_state("dpt_large")) == (["dpt_large"], True)
    assert guess_variants(meta_state("dpt_hybrid_ade20k")) == (["dpt_hybrid_ade20k"], True)
    with pytest.raises(
        WeightsError, match="looks like dpt_hybrid / dpt_hybrid_kitti / dpt_hybrid_nyu"
    ):
        load_into(DPT(TINY), meta_state("dpt_hybrid"), source="hybrid.pt")


def test_unknown_architecture_without_model_is_refused(tiny_pt: Path) -> None:
    with pytest.raises(WeightsError, match="not a checkpoint of any DPT variant.*model="):
        load_model(tiny_pt)


# --------------------------------------------------------------------------- download and cache


def test_download_is_verified_and_cached(tmp_path: Path, tiny_pt: Path, http_dir) -> None:
    served, base, requests = http_dir
    name = f"tiny-{_sha256(tiny_pt)[:8]}.pt"
    (served / name).write_bytes(tiny_pt.read_bytes())
    cache = tmp_path / "cache"

    first = load_model(f"{base}/{name}", model=TINY, cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == [name]
    second = load_model(f"{base}/{name}", model=TINY, cache_dir=cache)
    assert requests == [f"/{name}"]
    _assert_same_weights(first, second)


def test_download_with_wrong_hash_leaves_nothing(tmp_path: Path, tiny_pt: Path, http_dir) -> None:
    served, base, _ = http_dir
    (served / "tiny-00000000.pt").write_bytes(tiny_pt.read_bytes())
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as info:
        load_model(f"{base}/tiny-00000000.pt", model=TINY, cache_dir=cache)
    assert "expected sha256 prefix (8 hex digits) 00000000" in str(info.value)
    assert f"got sha256 {_sha256(tiny_pt)}" in str(info.value)
    assert list(cache.iterdir()) == []


def test_registry_checkpoint_download_and_weights_dir(
    tmp_path: Path, tiny_pt: Path, http_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, base, requests = http_dir
    name = f"tiny-midas-{_sha256(tiny_pt)[:8]}.pt"
    (served / name).write_bytes(tiny_pt.read_bytes())
    entry = Checkpoint(
        name="tiny",
        model="dpt_base",
        task="depth",
        file_name=name,
        url=f"{base}/{name}",
        sha256=_sha256(tiny_pt)[:8],
        output_semantics="relative_inverse_depth",
        description="test",
    )
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    path = fetch_checkpoint(entry, cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / name and requests == [f"/{name}"]

    local = tmp_path / "offline"
    local.mkdir()
    (local / name).write_bytes(tiny_pt.read_bytes())
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(local))
    assert fetch_checkpoint(entry, cache_dir=tmp_path / "empty") == local / name
    assert len(requests) == 1

    (local / name).write_bytes(b"not the released file")
    with pytest.raises(WeightsError, match=f"{local / name}: wrong hash: expected"):
        fetch_checkpoint(entry, cache_dir=tmp_path / "empty")


def test_no_network_and_no_cache_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = REGISTRY["dpt_hybrid"]
    offline = dataclasses.replace(entry, url=_closed_port_url(entry.file_name), mirrors=())
    monkeypatch.setitem(REGISTRY, "dpt_hybrid", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    cache_path = Path(torch.hub.get_dir()) / "checkpoints" / entry.file_name

    with pytest.raises(WeightsError) as info:
        create_model("dpt_hybrid")
    text = str(info.value)
    assert f"download {offline.url}" in text
    assert f"put it at {cache_path}" in text
    assert WEIGHTS_DIR_ENV in text and "weights" in text
    assert not cache_path.exists()

    with pytest.raises(WeightsError, match=f"no cached copy at {tmp_path / 'c' / 'x-1234abcd.pt'}"):
        load_model(_closed_port_url("x-1234abcd.pt"), cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- create_model


def test_create_model_random_and_names() -> None:
    with torch.device("meta"):
        metric = create_model("dpt_hybrid_kitti", "random")
        labels = create_model("dpt_large_ade20k", "random")
    assert metric.output_semantics == "metric_depth" and not metric.training
    assert labels.output_semantics == "labels"
    with pytest.raises(WeightsError, match="unknown model 'dpt_huge'.*dpt_hybrid.*module:callable"):
        create_model("dpt_huge", "random")
    with pytest.raises(WeightsError, match="checkpoint of 'dpt_large', not of 'dpt_hybrid'"):
        create_model("dpt_hybrid", "dpt_large")


def test_create_model_with_a_file_of_another_variant(tiny_pt: Path) -> None:
    with pytest.raises(WeightsError, match=r"does not fit model 'dpt_hybrid': \d+ missing keys"):
        create_model("dpt_hybrid", tiny_pt)


_PLUGIN = """
import torch
from torch import nn

class Mean(nn.Module):
    def forward(self, x):
        return x.mean(dim=1)

def make():
    return Mean()

def make_with(weights):
    model = Mean()
    model.weights = weights
    model.output_semantics = "metric_depth"
    return model

def not_a_module():
    return "model"

def bad_semantics():
    model = Mean()
    model.output_semantics = "depthish"
    return model

def broken():
    raise ValueError("plug-in exploded")
"""


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "dpt_test_plugin_" + str(abs(hash(tmp_path)))
    (tmp_path / f"{name}.py").write_text(_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_plugin_models(plugin_module: str) -> None:
    model = create_model(f"{plugin_module}:make")
    assert model.output_semantics == "relative_inverse_depth"
    assert model(torch.ones(1, 3, 32, 32)).shape == (1, 32, 32)
    with_weights = create_model(f"{plugin_module}:make_with", "/some/file.pt")
    assert with_weights.weights == "/some/file.pt"
    assert with_weights.output_semantics == "metric_depth"


@pytest.mark.parametrize(
    ("spec", "weights", "message"),
    [
        ("dpt_no_such_module_xyz:make", None, "cannot import 'dpt_no_such_module_xyz'"),
        ("{m}:nope", None, "has no attribute 'nope'"),
        ("{m}:not_a_module", None, "returned a str, not a torch.nn.Module"),
        ("{m}:bad_semantics", None, "output_semantics 'depthish' is not one of"),
        ("{m}:make", "w.pt", "takes no 'weights' argument"),
        ("{m}:", None, "must look like 'package.module:callable'"),
    ],
)
def test_plugin_errors(plugin_module: str, spec: str, weights: str | None, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        create_model(spec.format(m=plugin_module), weights)


def test_plugin_exceptions_propagate(plugin_module: str) -> None:
    with pytest.raises(ValueError, match="plug-in exploded"):
        create_model(f"{plugin_module}:broken")
