//! Integration tests of the `jeos` binary.

#[test]
fn guest_init_is_embedded_and_static() {
    let bytes = builder::GUEST_INIT;
    assert_eq!(&bytes[..4], b"\x7fELF");
}
