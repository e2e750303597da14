//! The `jeos` command.

fn main() {
    let _ = builder::GUEST_INIT.len();
}
