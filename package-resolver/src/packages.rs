//! (resolver-core: in progress)
