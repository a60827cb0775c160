"""The authors' released DPT checkpoints: registry, verified cached download, strict loading.

Checkpoints come from the isl-org/DPT release ``1_0`` (README of isl-org/DPT; the MiDaS v3
release hosts the two depth files under the same names). The authors publish no full sha256:
each file name embeds the first 8 hex digits of the file's sha256 (``dpt_hybrid-midas-
501f0c75.pt``), which is what ``torch.hub``'s ``check_hash`` verifies; so do we.

Resolution order for a registry name: ``$DPT_ROS_WEIGHTS_DIR/<file name>``, then the cache
``torch.hub.get_dir()/checkpoints/<file name>``, then a download into that cache (temporary file
in the same folder, hash verified, then renamed: no partial file is ever left under the final
name). Files are read with ``torch.load(weights_only=True)`` or as ``.safetensors``; nothing is
unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpt_ros.model.dpt import DPT, MODEL_NAMES, DPTConfig, model_config

__all__ = [
    "REGISTRY",
    "WEIGHTS_DIR_ENV",
    "Checkpoint",
    "WeightsError",
    "default_cache_dir",
    "download",
    "fetch_checkpoint",
    "guess_variants",
    "hash_prefix_from_name",
    "load_into",
    "load_model",
    "read_state_dict",
    "registry_entry",
    "resolve_source",
    "sha256_of",
]

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "DPT_ROS_WEIGHTS_DIR"
"""Environment variable naming a folder that holds checkpoint files under their release names
(for machines without network: copy the files there, or into the cache)."""

OUTPUT_SEMANTICS = ("relative_inverse_depth", "metric_depth", "labels")

# torch.hub's convention: "<name>-<hex sha256 prefix>.<ext>".
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_EXAMPLES = 5


class WeightsError(RuntimeError):
    """A checkpoint could not be found, fetched, verified, read or loaded; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    """One released checkpoint of the authors.

    ``sha256`` is what is published: the 8-hex-digit prefix embedded in ``file_name`` (a full
    64-digit digest would be checked in full). ``mirrors`` are tried, in order, when ``url`` is
    unreachable; they must serve the identical file.
    """

    name: str
    model: str
    task: str
    file_name: str
    url: str
    sha256: str
    output_semantics: str
    description: str
    mirrors: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


def hash_prefix_from_name(name: str) -> str | None:
    """The sha256 prefix a file name embeds (``x-501f0c75.pt`` -> ``501f0c75``), else None."""
    match = _HASH_IN_NAME.search(Path(name).name)
    return match.group(1) if match else None


_DPT_RELEASE = "https://github.com/intel-isl/DPT/releases/download/1_0/"
_MIDAS_V3_RELEASE = "https://github.com/intel-isl/MiDaS/releases/download/v3/"


def _entry(
    name: str, task: str, file_name: str, semantics: str, description: str, midas: bool = False
) -> Checkpoint:
    prefix = hash_prefix_from_name(file_name)
    if prefix is None:
        raise ValueError(f"registry file name {file_name!r} does not embed a sha256 prefix")
    mirrors = (_MIDAS_V3_RELEASE + file_name,) if midas else ()
    return Checkpoint(
        name=name,
        model=name,
        task=task,
        file_name=file_name,
        url=_DPT_RELEASE + file_name,
        sha256=prefix,
        output_semantics=semantics,
        description=description,
        mirrors=mirrors,
    )


REGISTRY: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _entry(
            "dpt_hybrid",
            "depth",
            "dpt_hybrid-midas-501f0c75.pt",
            "relative_inverse_depth",
            "DPT-Hybrid trained on the MIX 6 mixture (MiDaS v3)",
            midas=True,
        ),
        _entry(
            "dpt_large",
            "depth",
            "dpt_large-midas-2f21e586.pt",
            "relative_inverse_depth",
            "DPT-Large trained on the MIX 6 mixture (MiDaS v3)",
            midas=True,
        ),
        _entry(
            "dpt_hybrid_ade20k",
            "segmentation",
            "dpt_hybrid-ade20k-53898607.pt",
            "labels",
            "DPT-Hybrid semantic segmentation, ADE20K (150 classes)",
        ),
        _entry(
            "dpt_large_ade20k",
            "segmentation",
            "dpt_large-ade20k-b12dca68.pt",
            "labels",
            "DPT-Large semantic segmentation, ADE20K (150 classes)",
        ),
        _entry(
            "dpt_hybrid_kitti",
            "depth",
            "dpt_hybrid_kitti-cb926ef4.pt",
            "metric_depth",
            "DPT-Hybrid fine-tuned on KITTI (metres after the fixed scale/shift/inversion)",
        ),
        _entry(
            "dpt_hybrid_nyu",
            "depth",
            "dpt_hybrid_nyu-2ce69ec7.pt",
            "metric_depth",
            "DPT-Hybrid fine-tuned on NYUv2 (metres after the fixed scale/shift/inversion)",
        ),
    )
}


# --------------------------------------------------------------------------- files and hashes


def default_cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (honours ``TORCH_HOME`` and ``torch.hub.set_dir``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_mismatch(what: str, expected: str, got: str) -> str:
    kind = "sha256" if len(expected) == 64 else f"sha256 prefix ({len(expected)} hex digits)"
    return f"{what}: wrong hash: expected {kind} {expected}, got sha256 {got}"


def verify_sha256(path: Path, expected: str) -> None:
    got = sha256_of(path)
    if not got.startswith(expected.lower()):
        raise WeightsError(
            _hash_mismatch(str(path), expected, got)
            + ". The file is corrupt or not the released one: delete it and fetch it again."
        )


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file")


_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)


def download(url: str, dest: Path, *, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; verify ``sha256`` (prefix or full) if given.

    The data goes to a temporary file beside ``dest`` and is renamed only after the hash
    matched, so an interrupted or wrong download never leaves a file under ``dest``. Network
    failures raise the underlying ``urllib``/socket error (callers turn it into advice).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        got = digest.hexdigest()
        if sha256 is not None and not got.startswith(sha256.lower()):
            raise WeightsError(_hash_mismatch(f"download of {url}", sha256, got) + "; discarded.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _no_download_advice(file_name: str, urls: Sequence[str], cache_path: Path) -> str:
    url = urls[0]
    return (
        f"To use it offline, download {url} on a machine with network "
        f"(e.g. curl -L -o {file_name} {url}) and put it at {cache_path}, "
        f"or put it in a folder named by ${WEIGHTS_DIR_ENV}, "
        f"or pass the file's path as the weights."
    )


def fetch_checkpoint(
    checkpoint: Checkpoint | str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
    timeout: float = 60.0,
) -> Path:
    """The verified local file of a registry checkpoint, downloading it into the cache if needed."""
    entry = registry_entry(checkpoint) if isinstance(checkpoint, str) else checkpoint
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_path = cache / entry.file_name
    env_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if env_dir:
        candidate = Path(env_dir) / entry.file_name
        if candidate.is_file():
            verify_sha256(candidate, entry.sha256)
            return candidate
    if cache_path.is_file():
        verify_sha256(cache_path, entry.sha256)
        return cache_path
    looked = f"{cache_path}" + (f" nor {Path(env_dir) / entry.file_name}" if env_dir else "")
    if not allow_download:
        raise WeightsError(
            f"checkpoint {entry.name!r} ({entry.file_name}) is not cached (no {looked}) and "
            "downloading is off. " + _no_download_advice(entry.file_name, entry.urls, cache_path)
        )
    failures = []
    for url in entry.urls:
        logger.info("downloading %s to %s", url, cache_path)
        try:
            return download(url, cache_path, sha256=entry.sha256, timeout=timeout)
        except _NETWORK_ERRORS as exc:
            failures.append(f"{url}: {_reason(exc)}")
    raise WeightsError(
        f"cannot get checkpoint {entry.name!r}: no {looked}, and the download failed "
        f"({'; '.join(failures)}). " + _no_download_advice(entry.file_name, entry.urls, cache_path)
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}"


def _fetch_url(url: str, cache_dir: Path | None, timeout: float) -> Path:
    file_name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not file_name:
        raise WeightsError(f"URL {url!r} does not end in a file name")
    prefix = hash_prefix_from_name(file_name)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    cache_path = cache / file_name
    if cache_path.is_file():
        if prefix is not None:
            verify_sha256(cache_path, prefix)
        return cache_path
    try:
        return download(url, cache_path, sha256=prefix, timeout=timeout)
    except _NETWORK_ERRORS as exc:
        raise WeightsError(
            f"cannot download {url} ({_reason(exc)}) and there is no cached copy at "
            f"{cache_path}. " + _no_download_advice(file_name, [url], cache_path)
        ) from exc


# --------------------------------------------------------------------------- reading


def read_state_dict(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` from a ``.pt``/``.pth``/``.bin`` or ``.safetensors`` file.

    Accepts plain state dicts, ones nested under ``"state_dict"`` or ``"model"`` (training
    checkpoints that also hold an optimizer), and strips ``module.`` prefixes (DataParallel).
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        # /dev/zero, a FIFO, a socket: reading would never end or never hold a checkpoint
        kind = "directory" if path.is_dir() else "device, pipe or socket"
        raise WeightsError(f"checkpoint {path} is a {kind}, not a regular checkpoint file")
    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from exc
    else:
        raw = _torch_load(path, map_location)
    return _flatten_state_dict(raw, path)


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if unsupported:
            raise WeightsError(
                f"{path} contains a pickled Python object ({unsupported.group(1)}), not just "
                "tensors; it is refused because loading it would run arbitrary code "
                "(torch.load(weights_only=True)). Re-save only the weights: "
                "torch.save(model.state_dict(), path), or use .safetensors."
            ) from exc
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise WeightsError(
            f"{path} cannot be read as a weights-only PyTorch checkpoint: {first}"
        ) from exc
    except Exception as exc:  # a corrupt file makes the unpickler fail in any number of ways
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path} is not a PyTorch checkpoint (torch.load failed: {first}); expected a file "
            "written by torch.save(state_dict) or a .safetensors file"
        ) from exc


def _flatten_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(raw, Mapping):
        nested = next(
            (raw[k] for k in ("state_dict", "model") if isinstance(raw.get(k), Mapping)), None
        )
        if nested is None:
            break
        raw = nested
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{path} holds a {type(raw).__name__}, not a state dict")
    not_tensors = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(
            f"{path}: {len(not_tensors)} entries are not tensors (e.g. "
            f"{_examples(map(str, not_tensors))}); expected a state dict of tensors"
        )
    if not raw:
        raise WeightsError(f"{path} holds an empty state dict")
    return {k.removeprefix("module."): v for k, v in raw.items()}


# --------------------------------------------------------------------------- loading


def _examples(keys: Any, n: int = _EXAMPLES) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _config_of(model: str | DPTConfig) -> DPTConfig:
    if isinstance(model, DPTConfig):
        return model
    try:
        return model_config(model)
    except ValueError as exc:
        raise WeightsError(str(exc)) from None


@functools.cache
def _config_shapes(config: DPTConfig) -> dict[str, tuple[int, ...]]:
    # The meta device builds the module tree without allocating or initialising weights.
    with torch.device("meta"):
        model = DPT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def _mismatch_report(
    expected: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]]
) -> list[str]:
    missing = expected.keys() - got.keys()
    unexpected = got.keys() - expected.keys()
    shapes = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    lines = []
    if missing:
        lines.append(f"{len(missing)} missing keys, e.g. {_examples(missing)}")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected keys, e.g. {_examples(unexpected)}")
    if shapes:
        shown = "; ".join(
            f"{k}: checkpoint {list(got[k])} vs model {list(expected[k])}"
            for k in shapes[:_EXAMPLES]
        )
        more = f"; ... ({len(shapes) - _EXAMPLES} more)" if len(shapes) > _EXAMPLES else ""
        lines.append(f"{len(shapes)} shape differences: {shown}{more}")
    return lines


def guess_variants(state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], bool]:
    """Which of ``MODEL_NAMES`` a state dict is, judged by its keys and shapes.

    Returns ``(names, exact)``: every variant with exactly these keys and shapes (the metric
    variants share ``dpt_hybrid``'s), or else the single closest one (fewest differing
    entries) with ``exact`` False.
    """
    own = _shapes(state_dict)
    scored = []
    for name in MODEL_NAMES:
        ref = _config_shapes(model_config(name))
        diff = len(ref.keys() ^ own.keys()) + sum(ref[k] != own[k] for k in ref.keys() & own.keys())
        scored.append((diff, name))
    exact = [name for diff, name in scored if diff == 0]
    return (exact, True) if exact else ([min(scored)[1]], False)


def _variant_hint(state_dict: Mapping[str, torch.Tensor]) -> str:
    names, exact = guess_variants(state_dict)
    if exact:
        return f" The checkpoint looks like {' / '.join(names)}."
    return f" It is no DPT variant's checkpoint; the closest is {names[0]}."


def _check_fits(
    expected: Mapping[str, tuple[int, ...]],
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    what: str,
    is_dpt: bool,
) -> None:
    report = _mismatch_report(expected, _shapes(state_dict))
    if report:
        message = f"{source} does not fit {what}: " + "; ".join(report) + "."
        raise WeightsError(message + (_variant_hint(state_dict) if is_dpt else ""))


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
    variant: str | None = None,
) -> nn.Module:
    """``model.load_state_dict(state_dict, strict=True)`` with an error that explains a mismatch:
    missing and unexpected keys and shape differences (counts and examples), and for a DPT which
    variant the checkpoint looks like. ``variant`` only names the model in that message."""
    what = f"model {variant!r}" if variant else f"this {type(model).__name__}"
    _check_fits(_shapes(model.state_dict()), state_dict, source, what, isinstance(model, DPT))
    model.load_state_dict(state_dict, strict=True)
    return model


def registry_entry(name: str) -> Checkpoint:
    """The registry entry ``name``; the error says when the authors released none for a model."""
    try:
        return REGISTRY[name]
    except KeyError:
        if name in MODEL_NAMES:
            raise WeightsError(
                f"the authors released no checkpoint for {name!r} (released: "
                f"{', '.join(REGISTRY)}); use weights='random', a checkpoint file, a URL or a "
                "Hugging Face DPT directory"
            ) from None
        raise WeightsError(
            f"unknown checkpoint {name!r}; registry names: {', '.join(REGISTRY)}"
        ) from None


def resolve_source(
    source: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """A registry name, URL or path -> a verified local checkpoint file (or HF directory)."""
    text = os.fspath(source)
    cache = Path(cache_dir) if cache_dir is not None else None
    if text in REGISTRY:
        return fetch_checkpoint(REGISTRY[text], cache_dir=cache, timeout=timeout)
    if _is_url(text):
        parsed = urllib.parse.urlparse(text)
        if parsed.scheme != "file":
            return _fetch_url(text, cache, timeout)
        text = urllib.request.url2pathname(parsed.path)
    path = Path(text).expanduser()
    if path.exists():
        by_name = {c.file_name: c for c in REGISTRY.values()}
        if path.is_file() and path.name in by_name:
            verify_sha256(path, by_name[path.name].sha256)
        return path
    if text in MODEL_NAMES:
        registry_entry(text)
    raise WeightsError(
        f"checkpoint not found: {path} is not a file or directory, {text!r} is not a registry "
        f"name ({', '.join(REGISTRY)}) and not an http(s):// URL"
    )


def load_model(
    source: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    model: str | DPTConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DPT:
    """A DPT with weights, in eval mode.

    ``source``: a registry name (``REGISTRY``), a checkpoint path or URL (``.pt``/``.pth``/
    ``.bin``/``.safetensors``), or a Hugging Face ``transformers`` DPT directory.
    ``model``: the variant (a name or a ``DPTConfig``) to build. Without it a registry entry or
    release file name gives its own, and any other file is matched against every variant's keys
    and shapes; the fine-tuned metric variants (``dpt_hybrid_kitti`` / ``_nyu``) have the keys of
    ``dpt_hybrid``, so a renamed file of theirs needs ``model=`` to give metres.
    ``cache_dir``: where downloads go (default ``torch.hub.get_dir()/checkpoints``).
    """
    text = os.fspath(source)
    path = resolve_source(text, cache_dir=cache_dir)
    if path.is_dir():
        return _load_hf_dir(path, map_location, model)
    state_dict = read_state_dict(path)
    if model is None:
        model = _variant_for(text, path, state_dict)
    config = _config_of(model)
    # Checked before building, so a wrong file costs no full-size model allocation.
    what = f"model {model!r}" if isinstance(model, str) else "the given DPTConfig"
    _check_fits(_config_shapes(config), state_dict, str(path), what, is_dpt=True)
    net = DPT(config)
    net.load_state_dict(state_dict, strict=True)
    return net.to(map_location).eval()


def _load_hf_dir(
    path: Path, map_location: str | torch.device, model: str | DPTConfig | None
) -> DPT:
    from dpt_ros.model import hf

    overrides = {}
    if model is not None:
        # The HF config fixes the architecture; a named variant must have the same shapes and
        # contributes what HF configs cannot express (the metric variants' fixed inversion).
        reference = _config_of(model)
        if reference.metric_scale is not None:
            overrides = {
                "metric_scale": reference.metric_scale,
                "metric_shift": reference.metric_shift,
            }
    net = hf.load_hf_model(path, map_location=map_location, overrides=overrides)
    if model is not None:
        what = f"model {model!r}" if isinstance(model, str) else "the given DPTConfig"
        expected = _config_shapes(_config_of(model))
        _check_fits(expected, net.state_dict(), f"Hugging Face DPT at {path}", what, is_dpt=True)
    return net


def _variant_for(source: str, path: Path, state_dict: Mapping[str, torch.Tensor]) -> str:
    if source in REGISTRY:
        return REGISTRY[source].model
    for entry in REGISTRY.values():
        if path.name == entry.file_name:
            return entry.model
    names, exact = guess_variants(state_dict)
    if exact:
        return names[0]
    report = _mismatch_report(_config_shapes(model_config(names[0])), _shapes(state_dict))
    raise WeightsError(
        f"{path} is not a checkpoint of any DPT variant ({', '.join(MODEL_NAMES)}); against the "
        f"closest, {names[0]}: " + "; ".join(report) + ". Pass model=<name or DPTConfig> if it "
        "is a custom configuration."
    )
