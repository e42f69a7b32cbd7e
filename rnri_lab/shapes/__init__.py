"""Training and scoring the tiny shapes models (the world, its renderer and analyzer, and the models' loader stay
in the product: :mod:`rnri.shapes`)."""
