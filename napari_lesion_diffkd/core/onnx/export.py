"""Export model bundles and SAMs to ONNX files that ONNX Runtime runs on a CPU.

What can be exported (``export_model`` picks by the bundle):

* diffusion bundles (the students, and the teachers: every network the samplers drive) ->
  one **denoiser** graph ``(image, x_t, t) -> x0`` with dynamic N and B = N * K
  (``graphs.DenoiserGraph``); the sampler loop stays outside the graph and is run by the
  same torch sampler code through ``driver.OnnxDenoiser`` (same seeds, same noise);
* plain segmentation bundles (``objective: segmentation``: the ``*-unet`` baselines) -> one
  **segmenter** graph ``image -> logits``;
* SAMs (bundles of kind ``sam``, official checkpoints) -> **two files**: ``<stem>.encoder.onnx``
  (``graphs.SamEncoderGraph``) and ``<stem>.decoder.onnx`` (``core/sam/onnx_export.py``, the
  decoder with the crop-size fix), where ``<stem>`` is the requested file name without its
  ``.onnx`` suffix.

Every file carries the bundle's name, kind, input size and channels, schedule length, prediction
target, sampler defaults and weights hash as ONNX ``metadata_props`` (``read_metadata``), so a
file can be traced back to its bundle. Files are written to a temporary name in the target
folder and renamed when complete. TorchScript exporter (``dynamo=False``), opset 17: the dynamo
exporter needs ``onnxscript``, which the project does not install.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_lesion_diffkd import __version__
from napari_lesion_diffkd.core.onnx.graphs import DenoiserGraph, SamEncoderGraph, SegmenterGraph

OPSET = 17
KIND_DENOISER = "denoiser"
KIND_SEGMENTER = "segmenter"
KIND_SAM_ENCODER = "sam-encoder"
KIND_SAM_DECODER = "sam-decoder"
METADATA_KEY = "napari_lesion_diffkd"


class OnnxExportError(RuntimeError):
    """A model cannot be exported (the message says which and why)."""


def graph_kind(config: dict[str, Any]) -> str:
    """``denoiser`` | ``segmenter`` | ``sam`` for a bundle config."""
    if config.get("kind") == "sam":
        return "sam"
    return KIND_SEGMENTER if config.get("objective") == "segmentation" else KIND_DENOISER


def sam_paths(out: str | Path) -> tuple[Path, Path]:
    """``(encoder, decoder)`` file names for a SAM export to ``out``.

    ``sam.onnx`` -> ``sam.encoder.onnx`` and ``sam.decoder.onnx`` in the same folder.
    """
    out = Path(out)
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    return out.with_name(f"{stem}.encoder.onnx"), out.with_name(f"{stem}.decoder.onnx")


def _contiguous_copy(network: nn.Module) -> nn.Module:
    """An eval-mode copy in the default memory format (the tracer records layout changes of a
    channels-last model as extra transposes)."""
    import copy

    net = copy.deepcopy(network).eval()
    return net.to(memory_format=torch.contiguous_format)


def _tmp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
    return Path(tmp)


def _export(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path,
            input_names: list[str], output_names: list[str],
            dynamic_axes: dict[str, dict[int, str]], metadata: dict[str, Any]) -> Path:
    """Trace ``model`` into ``path`` atomically and attach ``metadata``."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Tracer warnings flag Python ints taken from shapes; the graphs' shape
            # arithmetic is traced symbolically (checked by the dynamic-batch tests).
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(tmp), input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes,
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = json.dumps({**metadata, "package_version": __version__,
                                  "torch_version": torch.__version__.split("+")[0],
                                  "opset": OPSET})
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dict an exported file carries ({} for a foreign ONNX file)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return dict(json.loads(entry.value))
    return {}


def bundle_metadata(config: dict[str, Any], weights_sha256: str | None) -> dict[str, Any]:
    """The parts of a bundle config a runtime needs, plus the weights hash."""
    return {
        "name": config.get("name"),
        "role": config.get("role"),
        "input": config.get("input"),
        "prediction_target": config.get("prediction_target"),
        "sampler": config.get("sampler"),
        "num_timesteps": (config.get("schedule") or {}).get("num_timesteps"),
        "network": (config.get("network") or {}).get("_class_name"),
        "weights_sha256": weights_sha256,
    }


def export_bundle(bundle: Any, path: str | Path, weights_sha256: str | None = None) -> Path:
    """Export a loaded diffusion or segmentation :class:`ModelBundle` to one ONNX file.

    Args:
        bundle: ``core.bundle.ModelBundle`` (network on the CPU).
        path: the ``.onnx`` file to write (its folder is created).
        weights_sha256: recorded in the metadata (``cache.weights_sha256`` of the bundle).

    Returns:
        ``path``.

    Raises:
        OnnxExportError: the tracer or the ONNX checker refused the network.
    """
    path = Path(path)
    kind = graph_kind(bundle.config)
    s, c = bundle.input_size, bundle.image_channels
    net = _contiguous_copy(bundle.network).to("cpu")
    meta = {**bundle_metadata(bundle.config, weights_sha256), "kind": kind}
    gen = torch.Generator().manual_seed(0)
    image = torch.rand((1, c, s, s), generator=gen) * 2 - 1
    try:
        if kind == KIND_SEGMENTER:
            return _export(SegmenterGraph(net).eval(), (image,), path, ["image"], ["logits"],
                           {"image": {0: "N"}, "logits": {0: "N"}}, meta)
        # Dummy batch N = 1, K = 2 so that neither axis is traced as a constant 1.
        x_t = torch.randn((2, 1, s, s), generator=gen)
        t = torch.full((2,), float(bundle.schedule.num_timesteps - 1))
        meta["output_targets"] = list(getattr(bundle.network, "output_targets", None)
                                      or [bundle.prediction_target])
        return _export(DenoiserGraph(net).eval(), (image, x_t, t), path, ["image", "x_t", "t"],
                       ["x0"], {"image": {0: "N"}, "x_t": {0: "B"}, "t": {0: "B"},
                                "x0": {0: "B"}}, meta)
    except OnnxExportError:
        raise
    except Exception as exc:  # the tracer raises many types; say which model failed
        raise OnnxExportError(f"{bundle.name}: cannot export {type(bundle.network).__name__} "
                              f"to ONNX ({type(exc).__name__}: {exc})") from exc


def export_sam(loaded: Any, out: str | Path, weights_sha256: str | None = None
               ) -> tuple[Path, Path]:
    """Export a SAM's image encoder and prompt decoder (see :func:`sam_paths` for names).

    Args:
        loaded: ``core.sam.sam_bundle.LoadedSam``.
        out: requested file name; ``<stem>.encoder.onnx`` / ``<stem>.decoder.onnx`` are written.

    Returns:
        ``(encoder_path, decoder_path)``.
    """
    from napari_lesion_diffkd.core.sam.architectures import low_res_size
    from napari_lesion_diffkd.core.sam.onnx_export import export_decoder_onnx

    enc_path, dec_path = sam_paths(out)
    sam = _contiguous_copy(loaded.model).to("cpu")
    s = int(sam.image_encoder.img_size)
    meta = {"name": loaded.name, "arch": loaded.arch, "img_size": s,
            "low_res_size": list(low_res_size(sam)),
            "pixel_mean": sam.pixel_mean.flatten().tolist(),
            "pixel_std": sam.pixel_std.flatten().tolist(), "weights_sha256": weights_sha256,
            # medsam-lite min-max scales instead of mean/std (core/sam/medsam_lite.py).
            "normalisation": (loaded.config.get("input") or {}).get("normalisation")}
    image = torch.randn((1, 3, s, s), generator=torch.Generator().manual_seed(0))
    try:
        _export(SamEncoderGraph(sam).eval(), (image,), enc_path, ["image"],
                ["image_embeddings"], {}, {**meta, "kind": KIND_SAM_ENCODER})
        dec_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path(dec_path)
        try:
            export_decoder_onnx(sam, tmp)
            import onnx

            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            entry.key = METADATA_KEY
            entry.value = json.dumps({**meta, "kind": KIND_SAM_DECODER, "opset": OPSET,
                                      "package_version": __version__})
            onnx.save(proto, str(tmp))
            os.replace(tmp, dec_path)
        finally:
            tmp.unlink(missing_ok=True)
    except Exception as exc:
        raise OnnxExportError(f"{loaded.name}: cannot export the SAM to ONNX "
                              f"({type(exc).__name__}: {exc})") from exc
    return enc_path, dec_path


def is_sam_model(name_or_path: str | os.PathLike) -> bool:
    """True for a SAM bundle folder / registered SAM name, a checkpoint file or an official
    checkpoint name (``sam_vit_b``, ``medsam`` ...)."""
    from napari_lesion_diffkd.core.registry import UnknownModelError, resolve_model
    from napari_lesion_diffkd.core.sam.loading import CHECKPOINT_SUFFIXES, checkpoint_info
    from napari_lesion_diffkd.core.sam.sam_bundle import is_sam_bundle

    path = Path(name_or_path)
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        return True
    if str(name_or_path) == "medsam-lite":  # LiteMedSAM, core/sam/medsam_lite.py
        return True
    try:
        checkpoint_info(str(name_or_path))
        return True
    except KeyError:
        pass
    try:
        return is_sam_bundle(resolve_model(name_or_path))
    except UnknownModelError:
        return False


def export_model(name_or_path: str | os.PathLike, out: str | Path,
                 precision: str | None = None) -> list[Path]:
    """Load a registered model, bundle folder or SAM checkpoint and export it.

    Args:
        name_or_path: what ``lesion-diffkd predict --model`` accepts, or a SAM checkpoint
            name / file (``sam_vit_b``, ``path/to/medsam_vit_b.pth``, ``lesion-sam-tiny``).
        out: the ``.onnx`` file (SAMs: the stem of the encoder/decoder pair, see
            :func:`sam_paths`).
        precision: SAMs only: ``fp32`` writes the float32 pair; ``int8`` also writes the
            int8 pair next to it (``sam_quant.py``); None: the SAM's default
            (``sam_quant.default_precision``: int8 for ``medsam-lite``).

    Returns:
        The written files.

    Raises:
        LookupError: unknown model (``UnknownModelError`` included); ``BundleError`` /
            ``SamCheckpointError``: unreadable model; OnnxExportError: the export failed.
    """
    from napari_lesion_diffkd.core.onnx.cache import weights_sha256
    from napari_lesion_diffkd.core.registry import load_model

    if is_sam_model(name_or_path):
        from napari_lesion_diffkd.core.sam.loading import load_sam

        from napari_lesion_diffkd.core.onnx.sam_quant import (
            check_precision,
            default_precision,
            quantize_sam,
        )

        loaded = load_sam(name_or_path, device="cpu")
        precision = check_precision(precision or default_precision(loaded.name))
        files = list(export_sam(loaded, out, weights_sha256=weights_sha256(loaded.path)))
        if precision == "int8":
            files += list(quantize_sam(*files))
        return files
    if precision not in (None, "fp32"):
        raise ValueError(f"precision {precision!r} applies to SAMs only")
    bundle = load_model(name_or_path, device="cpu")
    return [export_bundle(bundle, out, weights_sha256=weights_sha256(bundle.path))]
