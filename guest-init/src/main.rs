//! guest-init: the appliance's PID 1.

fn main() {}
