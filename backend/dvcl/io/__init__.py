"""Image and data-set input/output through SimpleITK."""
