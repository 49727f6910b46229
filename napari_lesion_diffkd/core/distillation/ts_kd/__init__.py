"""Task-specific knowledge distillation from a SAM (seed 002 §3.2-3.3), headless.

A SAM teacher (``lesion-sam-tiny`` by default, or any SAM bundle / official checkpoint), run
prompt-free and optionally LoRA-tuned on the labelled training images, is distilled into a
prompt-free ViT + FPN student (preset ``vit-tiny`` = the standard ViT-Tiny) on a transfer set
of real and diffusion-generated images, then the student is fine-tuned on the labels.

| module | job |
|---|---|
| ``student`` | ``StudentConfig`` (presets ``vit-tiny``, ``vit-mini``), ``ViTFPNStudent``, ``HiddenAdapter`` |
| ``data`` | images/masks in SAM's input frame, views, normalise + pad, logits -> image frame |
| ``teacher`` | automatic-mode SAM forward (no prompt / whole-image box), prompt choice, LoRA tuning |
| ``losses`` | hidden-state MSE (eq. 5), logit MSE (eq. 6), 0.2·CE + 0.8·Dice (eq. 4) |
| ``config`` | ``TsKdConfig`` (YAML/JSON), budget fitting |
| ``trainer`` | ``run_ts_kd``: the whole pipeline as a ``JobEvent`` generator with exact resume |
| ``evaluation`` | validation Dice of teacher and student in each image's own frame |
| ``bundle`` | student bundles (config.json + fp16 safetensors), ``load_student_bundle``, ``predict`` |

The transfer-set image generator lives in ``core/diffusion/image_generator.py`` (and its
PSNR/MSE in ``image_generator_metrics.py``). CLI: ``lesion-diffkd distill --method ts-kd``.
"""
