"""Small models and datasets for examples, tests and bug reports."""
