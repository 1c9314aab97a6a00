"""The study layer: a study file becomes validated, keyed RunSpecs (schema, grid, checks, keys)."""
