"""Seed 003: a SAM-guided semi-supervised dual-task student (headless; no napari, no Qt).

A small MobileNet-style network predicts a lesion mask and a signed-distance map; the two are
fused into a mask prompt for a frozen SAM (``lesion-sam-tiny`` by default), whose refined
masks are the pseudo-labels of the unlabelled images, and whose soft predictions the student
also matches by KL. Only the student runs at inference. One job per module:

| module | job |
|---|---|
| ``config`` | ``SamSslConfig`` (YAML/JSON keys = attributes) |
| ``network`` | ``DualTaskNet``: inverted-residual encoder, separable decoder, mask + SDF heads |
| ``sdf`` | normalised signed distance targets in [-1, 1] (positive inside) |
| ``fusion`` | mask + SDF -> SAM mask prompt (the recipe and its frames are documented there) |
| ``pseudo`` | ``SamTeacher``: cached SAM embeddings, decoder-only refinement -> pseudo-labels |
| ``losses`` | Dice + BCE, SDF MSE/L1, Bernoulli KL with temperature, sigmoid ramp-up |
| ``split`` | group-aware, seeded labelled fraction (2% / 4% / 8%) |
| ``data`` | validation split -> labelled / unlabelled tensors in memory |
| ``augment`` | paired geometric + photometric augmentation from one ``torch.Generator`` |
| ``evaluate`` | validation Dice at full resolution; pseudo-label Dice on unlabelled images |
| ``trainer`` | ``train_sam_ssl``: the JobEvent generator (checkpoint, exact resume, budget, log) |
| ``bundle`` | save / load the student bundle (no pickle), ``predict_student`` |
"""

from napari_lesion_diffkd.core.distillation.sam_ssl.bundle import (
    LoadedStudent,
    StudentPrediction,
    load_student,
    predict_student,
    save_student,
)
from napari_lesion_diffkd.core.distillation.sam_ssl.config import SamSslConfig
from napari_lesion_diffkd.core.distillation.sam_ssl.network import DualTaskNet
from napari_lesion_diffkd.core.distillation.sam_ssl.trainer import train_sam_ssl

__all__ = ["DualTaskNet", "LoadedStudent", "SamSslConfig", "StudentPrediction", "load_student",
           "predict_student", "save_student", "train_sam_ssl"]
