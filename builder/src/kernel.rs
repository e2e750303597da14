//! (rootfs: in progress)
