//! (image-disk: in progress)
