"""Segment Anything (SAM) in the headless core: loading, prompting, LoRA, training, export.

Never imports napari or Qt. ``segment_anything`` is imported lazily through
``torchvision_shim.import_segment_anything`` (torchvision does not import on CPU-only
machines of this project; see that module). One job per module:

| module | job |
|---|---|
| ``torchvision_shim`` | stand-ins for the four torchvision names ``segment_anything`` imports |
| ``architectures`` | official ViT-B/L/H and the small ``lesion-sam-tiny`` (``TinySamConfig``) |
| ``loading`` | checkpoint table (URLs), cache, download, safe state-dict reading, ``load_sam`` |
| ``sam_bundle`` | SAM bundles (``config.json`` + fp16 safetensors) and ``LoadedSam`` |
| ``coords`` | napari (row, col) points/rectangles <-> SAM (x, y)/XYXY <-> model-input frame |
| ``inputs`` | image -> model input, mask -> mask-prompt logits (signed distance) |
| ``session`` | ``PromptSession``: cached embeddings (LRU), decoder-only prompting |
| ``prompts`` | simulated prompts: jittered boxes, error-region clicks, degraded masks |
| ``lora`` | LoRA adapters on q and v of the encoder's fused qkv; save/load/merge |
| ``decoding`` | the mask decoder over a batch of images (training) |
| ``training`` | ``train_promptable``: prompt-simulating trainer (JobEvent generator) |
| ``evaluation`` | ``evaluate_prompts``: box Dice, click gain, latency |
| ``onnx_export`` | mask decoder -> ONNX with the crop-size fix |
| ``tiny_vit`` | TinyViT image encoder in plain torch (LiteMedSAM's configuration) |
| ``medsam_lite`` | ``medsam-lite``: find, verify (size, SHA-256) and load LiteMedSAM |
| ``prefetch`` | cancelling a background image encoding (``CancelToken``) |
"""
