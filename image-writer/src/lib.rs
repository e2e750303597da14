//! Disk images and OVF packages.
#![forbid(unsafe_code)]
