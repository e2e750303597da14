//! (resolver-io: in progress)
