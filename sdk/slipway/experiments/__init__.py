"""A/B experiments between two registered versions of one model: the spec, the sequential test and the verdict."""
