//! (image-publish: in progress)
