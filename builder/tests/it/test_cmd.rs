//! `jeos test` end to end (in progress).
