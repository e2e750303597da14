//! The few AML encodings the DSDT needs (ACPI 6.5 §20, "ACPI Machine Language
//! Specification", and §6.4 resource descriptors).

/// `ZeroOp`.
pub const ZERO_OP: u8 = 0x00;
/// `OneOp`.
pub const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';

/// Encodes a `PkgLength` for a body of `body_len` bytes (the encoded length counts itself).
#[must_use]
pub fn pkg_length(body_len: usize) -> Vec<u8> {
    if body_len + 1 < 0x40 {
        return vec![u8::try_from(body_len + 1).expect("< 0x40")];
    }
    for extra in 1..=3usize {
        let total = body_len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut bytes = vec![
                u8::try_from(extra << 6).expect("extra <= 3")
                    | u8::try_from(total & 0xf).expect("masked to 4 bits"),
            ];
            for i in 0..extra {
                bytes.push(u8::try_from((total >> (4 + 8 * i)) & 0xff).expect("masked to 8 bits"));
            }
            return bytes;
        }
    }
    panic!("AML object of {body_len} bytes exceeds the 256 MiB PkgLength limit")
}

/// A `NameSeg`: exactly four characters from `[A-Z0-9_]`, padded with `_`.
#[must_use]
pub fn name_seg(name: &str) -> [u8; 4] {
    let mut seg = [b'_'; 4];
    for (slot, byte) in seg.iter_mut().zip(name.bytes()) {
        *slot = byte;
    }
    seg
}

/// The smallest integer encoding of `value`.
#[must_use]
pub fn integer(value: u64) -> Vec<u8> {
    match value {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        v => {
            if let Ok(byte) = u8::try_from(v) {
                vec![BYTE_PREFIX, byte]
            } else if let Ok(word) = u16::try_from(v) {
                [&[WORD_PREFIX][..], &word.to_le_bytes()].concat()
            } else if let Ok(dword) = u32::try_from(v) {
                [&[DWORD_PREFIX][..], &dword.to_le_bytes()].concat()
            } else {
                [&[QWORD_PREFIX][..], &v.to_le_bytes()].concat()
            }
        }
    }
}

/// A NUL-terminated string constant.
#[must_use]
pub fn string(value: &str) -> Vec<u8> {
    let mut bytes = vec![STRING_PREFIX];
    bytes.extend_from_slice(value.as_bytes());
    bytes.push(0);
    bytes
}

/// `EISAID("PNP0501")`: three letters of 5 bits and four hex digits, stored big-endian in
/// a DWord.
#[must_use]
pub fn eisa_id(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    assert!(b.len() == 7, "an EISA id has 7 characters");
    let letter = |c: u8| u32::from(c - 0x40) & 0x1f;
    let hex = u32::from_str_radix(&id[3..], 16).expect("EISA id ends in 4 hex digits");
    let value = (letter(b[0]) << 26) | (letter(b[1]) << 21) | (letter(b[2]) << 16) | hex;
    [&[DWORD_PREFIX][..], &value.to_be_bytes()].concat()
}

/// `Name(NAME, object)`.
#[must_use]
pub fn name(name: &str, object: &[u8]) -> Vec<u8> {
    [&[NAME_OP][..], &name_seg(name), object].concat()
}

/// `Scope(\NAME) { body }` for a root-relative single segment.
#[must_use]
pub fn scope_root(name: &str, body: &[u8]) -> Vec<u8> {
    let mut inner = vec![ROOT_CHAR];
    inner.extend_from_slice(&name_seg(name));
    inner.extend_from_slice(body);
    [&[SCOPE_OP][..], &pkg_length(inner.len()), &inner].concat()
}

/// `Device(NAME) { body }`.
#[must_use]
pub fn device(name: &str, body: &[u8]) -> Vec<u8> {
    let inner = [&name_seg(name)[..], body].concat();
    [
        &[EXT_OP_PREFIX, DEVICE_OP][..],
        &pkg_length(inner.len()),
        &inner,
    ]
    .concat()
}

/// `Package() { elements }`.
#[must_use]
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut inner =
        vec![u8::try_from(elements.len()).expect("small packages only (< 256 elements)")];
    for element in elements {
        inner.extend_from_slice(element);
    }
    [&[PACKAGE_OP][..], &pkg_length(inner.len()), &inner].concat()
}

/// `ResourceTemplate() { descriptors }`: a buffer ending with an End Tag.
#[must_use]
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut data: Vec<u8> = descriptors.concat();
    data.extend_from_slice(&[0x79, 0x00]); // End Tag, checksum 0 ("treated as correct")
    let size = integer(data.len() as u64);
    let inner = [size, data].concat();
    [&[BUFFER_OP][..], &pkg_length(inner.len()), &inner].concat()
}

/// `Memory32Fixed(ReadWrite, base, length)` (§6.4.3.4).
#[must_use]
pub fn memory32_fixed(base: u32, length: u32) -> Vec<u8> {
    [
        &[0x86, 0x09, 0x00, 0x01][..],
        &base.to_le_bytes(),
        &length.to_le_bytes(),
    ]
    .concat()
}

/// `Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq }` (§6.4.3.6).
#[must_use]
pub fn extended_interrupt(irq: u32) -> Vec<u8> {
    [&[0x89, 0x06, 0x00, 0x03, 0x01][..], &irq.to_le_bytes()].concat()
}

/// `IO(Decode16, base, base, 1, length)` (§6.4.2.5).
#[must_use]
pub fn io_port(base: u16, length: u8) -> Vec<u8> {
    [
        &[0x47, 0x01][..],
        &base.to_le_bytes(),
        &base.to_le_bytes(),
        &[0x01, length],
    ]
    .concat()
}

/// `IRQNoFlags() { irq }` (§6.4.2.1).
#[must_use]
pub fn irq_no_flags(irq: u8) -> Vec<u8> {
    [&[0x22][..], &(1u16 << irq).to_le_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_encodings() {
        assert_eq!(pkg_length(0), vec![1]);
        assert_eq!(pkg_length(0x3e), vec![0x3f]);
        // 0x3f body + 2 length bytes = 0x41 -> 0x41 & 0xf | 1<<6, 0x41 >> 4.
        assert_eq!(pkg_length(0x3f), vec![0x41, 0x04]);
        // 0x1000 body + 3 length bytes = 0x1003: two extra bytes.
        assert_eq!(pkg_length(0x1000), vec![0x83, 0x00, 0x01]);
    }

    #[test]
    fn integers_and_strings() {
        assert_eq!(integer(0), vec![0]);
        assert_eq!(integer(1), vec![1]);
        assert_eq!(integer(5), vec![0x0a, 5]);
        assert_eq!(integer(0x200), vec![0x0b, 0, 2]);
        assert_eq!(integer(0xd000_0000), vec![0x0c, 0, 0, 0, 0xd0]);
        assert_eq!(integer(1 << 32).len(), 9);
        assert_eq!(string("AB"), vec![0x0d, b'A', b'B', 0]);
    }

    #[test]
    fn eisa_id_matches_known_value() {
        // EISAID("PNP0501") == 0x0105D041 (stored little-endian).
        assert_eq!(eisa_id("PNP0501"), vec![0x0c, 0x41, 0xd0, 0x05, 0x01]);
    }

    #[test]
    fn resource_descriptors() {
        assert_eq!(memory32_fixed(0xd000_0000, 0x200).len(), 12);
        assert_eq!(extended_interrupt(5), vec![0x89, 6, 0, 3, 1, 5, 0, 0, 0]);
        assert_eq!(io_port(0x3f8, 8), vec![0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8]);
        assert_eq!(irq_no_flags(4), vec![0x22, 0x10, 0x00]);
        let template = resource_template(&[irq_no_flags(4)]);
        assert_eq!(
            template,
            vec![0x11, 0x08, 0x0a, 0x05, 0x22, 0x10, 0x00, 0x79, 0x00]
        );
    }

    #[test]
    fn device_and_scope_framing() {
        let dev = device("COM1", &name("_UID", &integer(0)));
        assert_eq!(&dev[..3], &[0x5b, 0x82, 0x0b]);
        assert_eq!(&dev[3..7], b"COM1");
        let scope = scope_root("_SB", &dev);
        assert_eq!(&scope[..7], &[0x10, 0x13, b'\\', b'_', b'S', b'B', b'_']);
        assert_eq!(
            package(&[integer(5), integer(0)]),
            vec![0x12, 0x05, 0x02, 0x0a, 5, 0]
        );
    }
}
