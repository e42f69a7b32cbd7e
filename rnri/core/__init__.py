"""The math layer (docs/architecture.md, "Layers"): sampling as a chain of step maps, the inverse-step solvers, the
priors, masks and directions, and the settings that describe an inversion. Tensors in, tensors out: nothing here
loads a model, reads an image or draws a page."""
