//! Booting built images for `jeos test` and `jeos run` (in progress).
