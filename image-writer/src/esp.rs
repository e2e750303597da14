//! Reading the boot files back from a disk image (in progress).
