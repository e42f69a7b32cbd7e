"""Stock diffusers pipelines seen by the math (docs/architecture.md, "Layers"): loading them (safetensors only), the
backbones and their defaults, the adapter that turns a pipeline into step maps, attention control, FLUX, images,
and the GPU speed knobs."""
